// {{name}}: answers each event with a greeting.
//
// Input data: {"name": "edge"}. Config: `greeting` (default `hello`).
// `brink build` bundles this module, its imports and npm packages into one
// with the SDK ('brink'); add "kv" or "outbox" to `brink.capabilities` in
// package.json to import 'brink/kv' or 'brink/outbox'.

import { Event, InvalidEvent, config, defineHandler, log } from 'brink';

export function greet(event) {
  const who = event.json().name;
  if (typeof who !== 'string' || who === '') {
    throw new InvalidEvent(`event ${event.id} needs data {"name": "..."}`);
  }
  const greeting = config.get('greeting') ?? 'hello';
  log.info(`greeting ${who}`);
  return new Event({
    type: 'com.example.greeting',
    source: event.source,
    subject: who,
    json: { message: `${greeting}, ${who}` },
  });
}

export const handler = defineHandler(greet);
