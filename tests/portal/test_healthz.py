def test_it_reports_database_and_broker_without_login(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True
    # No worker runs during this test: reported, not fatal.
    assert body["workers"] == {"ok": False, "names": []}
