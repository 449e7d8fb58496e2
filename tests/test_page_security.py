"""The page as a hospital's security review would try it (issue 25): inputs, the users file, refusal off
loopback, logins over TLS (password, API token, SSO header only from the proxy), headers, same origin, upload
types, and no upload left behind or downloadable, also across a restart."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serving import PASSWORD, free_port, self_signed, serve_command, serving, users_file

from chestaid.apps.page.inputs import clinical_inputs, plain
from chestaid.core.errors import ChestaidError

CONTEXT = ssl._create_unverified_context()


def test_inputs_as_a_clinician_means_them():
    assert clinical_inputs(None, "unknown", "") == {"age": None, "sex": None, "view": None}
    assert clinical_inputs("61", "f", "PA") == {"age": 61.0, "sex": "F", "view": "PA"}
    for bad in (True, float("nan"), [61], "abc", "True", "nan", -1, 121, "inf"):
        with pytest.raises(ChestaidError, match="age"):
            clinical_inputs(bad, None, None)
    with pytest.raises(ChestaidError, match="sex"):
        clinical_inputs(None, "X", None)
    with pytest.raises(ChestaidError, match="view"):
        clinical_inputs(None, None, ["PA"])
    assert plain("a\nb\x00c\u202e" + "x" * 500) == "a b c " + "x" * 193 + "…"


def test_users_file_holds_argon2_hashes_and_token_digests(tmp_path):
    from chestaid.apps.page.auth import Users, add_user

    path, token = users_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    entry = json.loads(path.read_text())["users"]["alice"]
    assert entry["password"].startswith("$argon2id$") and PASSWORD not in path.read_text()
    assert token not in path.read_text()
    users = Users(path)
    assert users.verify("alice", PASSWORD) and not users.verify("alice", "wrong password!")
    assert not users.verify("bob", PASSWORD)
    assert users.user_for_token(token) == "alice" and users.user_for_token("nope") is None
    with pytest.raises(ChestaidError, match="too short"):
        add_user(path, "bob", "short")


def test_off_loopback_without_logins_and_tls_is_refused_with_the_reason(tiny_run, tmp_path):
    users, _ = users_file(tmp_path)
    for extra, missing in (([], "logins (--users FILE"), (["--users", str(users)], "TLS (--certfile")):
        done = subprocess.run(serve_command(tiny_run.root, free_port(), "--host", "0.0.0.0", *extra),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "refusing to serve on 0.0.0.0" in done.stderr + done.stdout
        assert missing in done.stderr + done.stdout


def _get(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=CONTEXT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _upload(base: str, path: Path, headers: dict) -> tuple[int, bytes]:
    boundary = "chestaidboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    status, _, answer = _get(base + "gradio_api/upload", {**headers, "Content-Type":
                                                            f"multipart/form-data; boundary={boundary}"}, body)
    return status, answer


def test_logins_over_tls_and_nothing_left_behind(ungated_run, nih_root, tmp_path):
    from gradio_client import Client, handle_file

    users, token = users_file(tmp_path)
    cert, key = self_signed(tmp_path)
    parent = tmp_path / "uploads"
    port = free_port()
    command = serve_command(ungated_run.root, port, "--host", "0.0.0.0", "--users", str(users), "--certfile",
                            str(cert), "--keyfile", str(key), "--upload-dir", str(parent), "--trusted-header",
                            "X-Remote-User", "--trusted-proxy", "10.255.255.1", "--max-upload-mb", "1")
    image, unscored = sorted((nih_root / "images_001" / "images").glob("*.png"))[:2]
    bearer = {"Authorization": f"Bearer {token}"}
    with serving(command, port, https=True) as url:
        folder = next(parent.glob("chestaid-page-*"))
        assert folder.stat().st_mode & 0o777 == 0o700
        for path in ("gradio_api/info", "config", "gradio_api/call/score", f"gradio_api/file={image}"):
            assert _get(url + path)[0] in (401, 403), path  # no credentials: nothing answers
        assert _get(url + "gradio_api/info", {"X-Remote-User": "alice"})[0] == 401  # not from the proxy
        assert _get(url + "gradio_api/info", {"Authorization": "Bearer wrong"})[0] == 401
        form = b"username=alice&password=wrong+password"
        assert _get(url + "login", {"Content-Type": "application/x-www-form-urlencoded"}, form)[0] == 400
        status, headers, _ = _get(url + "gradio_api/info", bearer)
        assert status == 200 and "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
        assert "access-control-allow-origin" not in {k.lower() for k in headers}
        assert _get(url + "monitoring", bearer)[0] == 404 and _get(url + "gradio_api/runs", bearer)[0] == 404
        assert _upload(url, image, {**bearer, "Origin": "http://evil.example"})[0] == 403
        archive = tmp_path / "notes.zip"
        archive.write_bytes(b"PK\x03\x04" + b"\0" * 100)
        assert _upload(url, archive, bearer)[0] == 415  # by name, before anything is stored
        disguised = tmp_path / "text.png"
        disguised.write_text("not an image")
        assert _upload(url, disguised, bearer)[0] == 415  # by content, deleted
        status, answer = _upload(url, unscored, bearer)  # uploaded, never scored
        stored = json.loads(answer)[0]
        assert status == 200 and Path(stored).is_relative_to(folder)
        assert _get(url + f"gradio_api/file={stored}", bearer)[0] == 403  # an upload never comes back

        client = Client(url, headers=bearer, ssl_verify=False, verbose=False)
        result = client.predict(handle_file(str(image)), "61", "F", "PA", api_name="/score")
        assert result["patient"] == {"age": 61.0, "sex": "F", "view": "PA"} and len(result["findings"]) == 14
        for age in (True, "abc", [61], 1e9):
            answer = client.predict(handle_file(str(image)), age, "unknown", "unknown", api_name="/score")
            assert "error" in answer and answer["error"].startswith("age must") and "\n" not in answer["error"]
        assert "sex must" in client.predict(handle_file(str(image)), None, "X", "PA", api_name="/score")["error"]
        assert client.predict(None, None, "unknown", "unknown", api_name="/score")["error"].startswith("No file")
        leftovers = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size > 0]
        assert leftovers == [Path(stored)]  # only the upload that was never scored (the sweeper takes it later)
    assert not folder.exists()  # the folder goes at shutdown

    port = free_port()
    command = serve_command(ungated_run.root, port, "--users", str(users), "--upload-dir", str(parent))
    with serving(command, port) as url:  # a restart: the old URL points at nothing
        assert _get(url + f"gradio_api/file={stored}", bearer)[0] in (403, 404)
        assert _get(url + "gradio_api/info")[0] == 401  # logins asked for on loopback are required too
    assert list(parent.iterdir()) == []


def test_scores_near_zero_or_one_never_read_as_certainty():
    from chestaid.apps.page.display import score_text

    assert [score_text(v) for v in (0.99968, 0.9995, 0.9994, 0.5, 0.0005, 0.00049, 0.0, 1.0, None)] == [
        "> 0.999", "> 0.999", "0.999", "0.500", "0.001", "< 0.001", "< 0.001", "> 0.999", ""]
