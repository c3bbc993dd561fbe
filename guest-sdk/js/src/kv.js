// Key-value state, kept by the host across events and restarts: the
// standard wasi:keyvalue@0.2.0-draft2 plus Brink's TTL and prefix listing.
// Needs "kv" in `brink.capabilities` (package.json) and the bucket granted in
// the manifest (`kv = ["default"]`).

import { open } from 'wasi:keyvalue/store@0.2.0-draft2';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft2';
import { setWithTtl, listPrefix } from 'brink:edge/kv@0.1.3';
import { BrinkError } from './index.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function wrap(bucket, e) {
  const payload = e && e.payload !== undefined ? e.payload : e;
  const tag = payload && payload.tag;
  if (tag === 'access-denied') {
    return new BrinkError(
      `bucket \`${bucket}\` is not granted to this function (add it to \`kv = [...]\` in the manifest)`,
    );
  }
  if (tag === 'no-such-store') return new BrinkError(`no bucket \`${bucket}\``);
  return new BrinkError(`bucket \`${bucket}\`: ${payload && payload.val !== undefined ? payload.val : e}`);
}

function bytes(value) {
  return typeof value === 'string' ? encoder.encode(value) : value;
}

/** An open bucket. */
export class Bucket {
  constructor(name) {
    this.name = name;
    try {
      this.inner = open(name);
    } catch (e) {
      throw wrap(name, e);
    }
  }

  call(f) {
    try {
      return f();
    } catch (e) {
      throw wrap(this.name, e);
    }
  }

  /** The value of `key` (Uint8Array), or undefined. */
  get(key) {
    return this.call(() => this.inner.get(key));
  }

  /** The value of `key` decoded as JSON, or undefined. */
  getJson(key) {
    const raw = this.get(key);
    return raw === undefined ? undefined : JSON.parse(decoder.decode(raw));
  }

  /** Sets `key` to `value` (Uint8Array or string). */
  set(key, value) {
    this.call(() => this.inner.set(key, bytes(value)));
  }

  /** Sets `key` to `value` as JSON. */
  setJson(key, value) {
    this.set(key, JSON.stringify(value));
  }

  /** Sets `key`; it reads as absent after `ttlMs` milliseconds. */
  setWithTtl(key, value, ttlMs) {
    this.call(() => setWithTtl(this.inner, key, bytes(value), BigInt(ttlMs)));
  }

  /** Removes `key`; an absent key is fine. */
  delete(key) {
    this.call(() => this.inner.delete(key));
  }

  /** Whether `key` is set. */
  exists(key) {
    return this.call(() => this.inner.exists(key));
  }

  /** Adds `delta` to the counter at `key` atomically; returns the new value. */
  increment(key, delta) {
    return Number(this.call(() => increment(this.inner, key, BigInt(delta))));
  }

  /** Every key that starts with `prefix`, in byte order. */
  keysWithPrefix(prefix) {
    const keys = [];
    let cursor;
    do {
      const page = this.call(() => listPrefix(this.inner, prefix, cursor));
      keys.push(...page.keys);
      cursor = page.cursor;
    } while (cursor !== undefined && cursor !== null);
    return keys;
  }
}

/** Opens bucket `name`; fails when the function is not granted it. */
export function bucket(name) {
  return new Bucket(name);
}
