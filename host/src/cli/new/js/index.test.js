// Unit tests of the handler in plain Node.js (brink/testing stands in for
// the host). Run `npm test` after `brink build .`, which writes the SDK.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Event, InvalidEvent } from 'brink';
import * as testing from 'brink/testing';
import { greet } from './index.js';

const hello = (data) => new Event({ type: 'com.example.hello', source: '/cli', json: data });

test('it greets the name in the event', () => {
  testing.config.clear();
  const out = greet(hello({ name: 'edge' }));
  assert.deepEqual(out.json(), { message: 'hello, edge' });
  assert.equal(out.subject, 'edge');
});

test('the greeting comes from config', () => {
  testing.config.set('greeting', 'hi');
  assert.deepEqual(greet(hello({ name: 'edge' })).json(), { message: 'hi, edge' });
});

test('an event without a name is invalid', () => {
  assert.throws(() => greet(hello({})), InvalidEvent);
});
