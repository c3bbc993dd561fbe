// Stand-ins for the host's imports in plain Node.js (see register.js).
// One module serves every import; what a test sets is shared through
// globalThis so each import URL sees the same state.
const state = (globalThis.__brinkTesting ??= { config: new Map(), logs: [] });

/** Config values `config.get` returns: `testing.config.set('threshold', '30')`. */
export const config = state.config;
/** The [level, message] records the function logged. */
export const logs = state.logs;

// brink:edge/config
export function get(key) {
  return state.config.get(key);
}

// brink:edge/log
export function log(level, message) {
  state.logs.push([level, message]);
}

function absent(what) {
  return () => {
    throw new Error(`${what} is not available in plain Node.js tests; test it with \`brink run\``);
  };
}

// wasi:keyvalue and brink:edge/kv, brink:edge/outbox
export const open = absent('wasi:keyvalue');
export const increment = absent('wasi:keyvalue');
export const setWithTtl = absent('brink:edge/kv');
export const listPrefix = absent('brink:edge/kv');
export const send = absent('brink:edge/outbox');
