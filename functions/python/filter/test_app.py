"""The filter's logic in plain CPython; the built component is tested by
tests/integration (the same cases as functions/filter)."""

import unittest

import brink
from brink import testing

import app


def reading(value, device="t-17"):
    return brink.Event("com.example.reading", "/sensors/line-1", id="r-1", json={"device": device, "value": value})


class FilterTest(unittest.TestCase):
    def setUp(self):
        testing.CONFIG.clear()
        testing.CONFIG["threshold"] = "30"

    def test_a_reading_above_the_threshold_passes_unchanged(self):
        event = reading(31.2)
        self.assertIs(app.handle(event), event)

    def test_a_reading_at_or_below_the_threshold_is_dropped(self):
        self.assertIsNone(app.handle(reading(30)))

    def test_direction_below_passes_the_low_side(self):
        testing.CONFIG["direction"] = "below"
        self.assertIsNotNone(app.handle(reading(12)))
        self.assertIsNone(app.handle(reading(31)))

    def test_a_reading_that_is_not_a_number_is_an_invalid_event(self):
        with self.assertRaises(brink.InvalidEvent):
            app.handle(reading("hot"))

    def test_a_missing_threshold_is_an_internal_error(self):
        testing.CONFIG.clear()
        with self.assertRaises(brink.Internal):
            app.handle(reading(31))


if __name__ == "__main__":
    unittest.main()
