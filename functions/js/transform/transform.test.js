// The transform's logic in plain Node.js; the built component is tested in
// tests/integration (the same cases as functions/transform).
//   node --import <sdk>/testing/register.js --test
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Event, InvalidEvent } from 'brink';
import * as testing from 'brink/testing';
import { transform } from './transform.js';

const reading = (value, time) =>
  new Event({ type: 'com.example.reading', source: '/line-1', id: 'r-1', time, json: { device: 't-17', value } });

test('a Celsius reading becomes Fahrenheit under the default type', () => {
  testing.config.clear();
  const out = transform(reading(31.5, '2026-11-22T10:00:00Z'));
  assert.equal(out.type, 'com.brink.temperature.fahrenheit');
  assert.equal(out.subject, 't-17');
  assert.deepEqual(out.json(), {
    device_id: 't-17',
    temperature: { value: 88.7, unit: 'degF' },
    observed_at: '2026-11-22T10:00:00Z',
  });
});

test('the output type comes from config and observed_at is left out without a time', () => {
  testing.config.clear();
  testing.config.set('output_type', 'com.acme.temp.f');
  const out = transform(reading(0, undefined));
  assert.equal(out.type, 'com.acme.temp.f');
  assert.deepEqual(out.json(), { device_id: 't-17', temperature: { value: 32, unit: 'degF' } });
});

test('a reading that is not a number is an invalid event', () => {
  assert.throws(() => transform(reading('hot')), InvalidEvent);
});
