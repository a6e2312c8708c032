"""The official `openai` Python SDK against atelier's OpenAI-compatible /v1.

Starts `atelier serve --demo` (its own data folder, a free port), makes a user
and an API key through the REST API, then uses the SDK exactly as a program
would: list models, a chat completion, a streamed one, an image, a video, and
the errors it raises for a bad key and a refused request.
"""

import base64
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request
import uuid

import openai

ADMIN = ("admin@example.com", "sdk admin orchid kettle")


def atelier_binary():
    if os.environ.get("ATELIER_BIN"):
        return os.environ["ATELIER_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/atelier/target")
    return os.path.join(target, "debug", "atelier")


def post_json(url, body, token=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


class Server:
    """`atelier serve --demo` in a temporary folder, until `stop()`."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="atelier-sdk-")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "ATELIER_BIND": "127.0.0.1:0",
            "ATELIER_ADMIN_EMAIL": ADMIN[0],
            "ATELIER_ADMIN_PASSWORD": ADMIN[1],
        }
        self.process = subprocess.Popen(
            [atelier_binary(), "serve", "--demo"],
            cwd=self.dir.name,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        found = threading.Event()

        def read():
            for line in self.process.stderr:
                self.log.append(line)
                if os.environ.get("SDK_LOG"):
                    print(line, end="")
                match = re.search(r"listening on (http://[0-9.:]+)", line)
                if match:
                    self.url = match.group(1)
                    found.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not found.wait(60):
            self.stop()
            raise RuntimeError("atelier did not start:\n" + "".join(self.log))

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)
        self.process.stderr.close()
        self.dir.cleanup()


class OpenAiSdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        base = cls.server.url
        email = f"sdk-{uuid.uuid4().hex[:8]}@example.com"
        post_json(f"{base}/auth/register", {"email": email, "password": "velvet otter quantum lantern"})
        tokens = post_json(f"{base}/auth/login", {"email": email, "password": "velvet otter quantum lantern"})
        created = post_json(f"{base}/users/me/api-keys", {"name": "python sdk"}, tokens["access_token"])
        cls.key = created["key"]
        cls.client = openai.OpenAI(api_key=cls.key, base_url=f"{base}/v1", max_retries=0, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def test_models_are_listed(self):
        ids = [m.id for m in self.client.models.list()]
        self.assertIn("mock/chat", ids)
        self.assertIn("mock/image", ids)
        self.assertIn("mock/video", ids)

    def test_a_chat_completion(self):
        completion = self.client.chat.completions.create(
            model="mock/chat",
            messages=[{"role": "user", "content": "Say hello to the SDK"}],
            temperature=0.2,
        )
        self.assertEqual(completion.object, "chat.completion")
        self.assertEqual(completion.model, "mock/chat")
        self.assertIn("Say hello to the SDK", completion.choices[0].message.content)
        self.assertEqual(completion.choices[0].finish_reason, "stop")
        self.assertGreater(completion.usage.total_tokens, 0)

    def test_a_streamed_chat_completion(self):
        whole = self.client.chat.completions.create(
            model="mock/chat", messages=[{"role": "user", "content": "stream to the SDK"}]
        )
        pieces, chunks = [], 0
        with self.client.chat.completions.create(
            model="mock/chat",
            messages=[{"role": "user", "content": "stream to the SDK"}],
            stream=True,
        ) as stream:
            for chunk in stream:
                chunks += 1
                self.assertEqual(chunk.object, "chat.completion.chunk")
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
        self.assertGreater(chunks, 3)
        self.assertEqual("".join(pieces), whole.choices[0].message.content)

    def test_an_image_as_base64_and_as_a_link(self):
        image = self.client.images.generate(
            model="mock/image", prompt="a lighthouse at dusk", response_format="b64_json", size="1024x1024"
        )
        png = base64.b64decode(image.data[0].b64_json)
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        linked = self.client.images.generate(model="mock/image", prompt="a lighthouse at dusk", size="1024x1024")
        with urllib.request.urlopen(linked.data[0].url, timeout=30) as response:
            self.assertEqual(response.read(), png)

    def wait_for(self, video):
        deadline = time.time() + 60
        while video.status not in ("completed", "failed"):
            self.assertLess(time.time(), deadline, "the video did not finish")
            time.sleep(0.5)
            video = self.client.videos.retrieve(video.id)
        self.assertEqual(video.status, "completed", video)
        return video

    def test_a_video_is_made_and_downloaded(self):
        video = self.client.videos.create(model="mock/video", prompt="waves on a beach", seconds="4", size="1280x720")
        self.assertIn(video.status, ("queued", "in_progress"))
        self.assertEqual(video.seconds, "4")
        video = self.wait_for(video)
        content = self.client.videos.download_content(video.id)
        self.assertEqual(content.read()[4:8], b"ftyp")

    def test_a_video_from_an_image(self):
        image = self.client.images.generate(model="mock/image", prompt="a harbour", response_format="b64_json")
        png = base64.b64decode(image.data[0].b64_json)
        video = self.client.videos.create(
            model="mock/video", prompt="the boats sail out", input_reference=("harbour.png", png, "image/png")
        )
        video = self.wait_for(video)
        self.assertEqual(self.client.videos.download_content(video.id).read()[4:8], b"ftyp")

    def test_a_bad_key_raises_authentication_error(self):
        bad = openai.OpenAI(api_key="atl_000000000000_" + "0" * 64, base_url=self.client.base_url, max_retries=0)
        with self.assertRaises(openai.AuthenticationError) as raised:
            bad.models.list()
        self.assertEqual(raised.exception.status_code, 401)
        self.assertEqual(raised.exception.code, "invalid_api_key")
        bad.close()

    def test_a_refused_request_raises_bad_request(self):
        with self.assertRaises(openai.BadRequestError) as raised:
            self.client.chat.completions.create(model="mock/error-400", messages=[{"role": "user", "content": "x"}])
        self.assertEqual(raised.exception.status_code, 400)


if __name__ == "__main__":
    unittest.main(verbosity=2)
