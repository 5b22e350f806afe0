from fastapi.testclient import TestClient


def test_health_reports_the_index(client: TestClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["articles"] == 6
    assert body["model"] == "all-MiniLM-L6-v2"
