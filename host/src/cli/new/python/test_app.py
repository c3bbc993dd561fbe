"""Unit tests of the handler in plain CPython (brink.testing stands in for
the host). Run: PYTHONPATH=target/brink/sdk python3 -m unittest
(`brink build` writes the SDK there)."""

import unittest

import brink
from brink import testing

import app


class HandlerTest(unittest.TestCase):
    def setUp(self):
        testing.CONFIG.clear()

    def test_it_greets_the_name_in_the_event(self):
        out = app.handle(brink.Event("com.example.hello", "/cli", json={"name": "edge"}))
        self.assertEqual(out.json(), {"message": "hello, edge"})
        self.assertEqual(out.subject, "edge")

    def test_the_greeting_comes_from_config(self):
        testing.CONFIG["greeting"] = "hi"
        out = app.handle(brink.Event("com.example.hello", "/cli", json={"name": "edge"}))
        self.assertEqual(out.json(), {"message": "hi, edge"})

    def test_an_event_without_a_name_is_invalid(self):
        with self.assertRaises(brink.InvalidEvent):
            app.handle(brink.Event("com.example.hello", "/cli", json={}))


if __name__ == "__main__":
    unittest.main()
