from mysql_pg_assets.core.settings import DatabaseUrl, redact


def test_url_never_prints_its_password() -> None:
    url = DatabaseUrl.parse("mysql://app:s3cr%40t@db.example:3307/shop")
    assert url.password == "s3cr@t"
    assert (url.host, url.port, url.database) == ("db.example", 3307, "shop")
    for shown in (str(url), repr(url), f"{url}"):
        assert "s3cr" not in shown
        assert "app:***@db.example:3307/shop" in shown
    assert DatabaseUrl.parse(url.secret) == url


def test_with_database_keeps_the_server() -> None:
    url = DatabaseUrl.parse("postgresql://u:p@127.0.0.1/warehouse?sslmode=disable")
    other = url.with_database("dagster")
    assert other.secret == "postgresql://u:p@127.0.0.1:5432/dagster?sslmode=disable"


def test_redact_masks_passwords_inside_error_text() -> None:
    text = "connection to mysql://root:hunter2@10.0.0.1:3306/x failed; postgresql://a:b@h/d too"
    masked = redact(text)
    assert "hunter2" not in masked and ":b@" not in masked
    assert "mysql://root:***@10.0.0.1:3306/x" in masked
