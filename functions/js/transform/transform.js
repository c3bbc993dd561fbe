// Converts temperature readings from Celsius to Fahrenheit and reshapes them
// into the payload downstream systems expect (EdgeX's "transform" function);
// the JavaScript twin of functions/transform.
//
// Input data: {"device": "t-17", "value": 31.2} in degrees Celsius.
// Output data:
// {"device_id": "t-17", "temperature": {"value": 88.16, "unit": "degF"}, "observed_at": "<time>"}
// with the type from config `output_type` (default
// `com.brink.temperature.fahrenheit`) and the device as subject.

import { Event, InvalidEvent, config, defineHandler } from 'brink';

export const DEFAULT_OUTPUT_TYPE = 'com.brink.temperature.fahrenheit';

// Two decimals, rounding half away from zero as Rust's f64::round does, so
// both twins emit the same payloads.
function round2(x) {
  return (Math.sign(x) * Math.round(Math.abs(x) * 100)) / 100;
}

export function transform(event) {
  const reading = event.json();
  if (typeof reading?.device !== 'string' || typeof reading?.value !== 'number') {
    throw new InvalidEvent(
      `event ${event.id} data is not a reading: {"device": string, "value": number}`,
    );
  }
  const output = {
    device_id: reading.device,
    temperature: { value: round2((reading.value * 9) / 5 + 32), unit: 'degF' },
  };
  if (event.time != null) output.observed_at = event.time;
  return new Event({
    type: config.get('output_type') ?? DEFAULT_OUTPUT_TYPE,
    source: event.source,
    subject: reading.device,
    time: event.time,
    json: output,
  });
}

export const handler = defineHandler(transform);
