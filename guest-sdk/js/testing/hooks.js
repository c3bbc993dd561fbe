// Node's module resolution hooks for register.js.
const sdk = new URL('../src/', import.meta.url);
const bare = {
  brink: new URL('index.js', sdk).href,
  'brink/kv': new URL('kv.js', sdk).href,
  'brink/outbox': new URL('outbox.js', sdk).href,
  'brink/testing': new URL('./host.js', import.meta.url).href,
};

export async function resolve(specifier, context, next) {
  if (bare[specifier]) return { url: bare[specifier], shortCircuit: true };
  if (/^(brink|wasi):/.test(specifier)) {
    const name = specifier.replace(/@.*$/, '').replace(/[:/]/g, '-');
    return { url: new URL(`./host.js?${name}`, import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
