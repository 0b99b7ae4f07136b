from helpers import seed_body


def test_create_returns_queued_video(client, media_server):
    response = client.post("/v1/videos", json=seed_body(media_server))
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["status"] == "queued"
    assert video["id"].startswith("video_") and video["task_id"] == video["id"]
    assert response.headers["openai-poll-after-ms"].isdigit()
