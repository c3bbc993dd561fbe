// Runs handlers in plain Node.js, for unit tests:
//
//   node --import <sdk>/testing/register.js --test
//
// Outside a component there is no host: the contract's imports resolve to
// the stand-ins in host.js (config from `testing.config`, log records into
// `testing.logs`), and `brink`, `brink/kv`, `brink/outbox` and
// `brink/testing` to this SDK.
import { register } from 'node:module';

register('./hooks.js', import.meta.url);
