// Store-and-forward to the cloud: an event sent here is kept on disk until
// the uplink acknowledges it. Needs "outbox" in `brink.capabilities`
// (package.json) and the uplink granted in the manifest (`outbox = ["cloud"]`).

import { send as witSend } from 'brink:edge/outbox@0.1.3';
import { BrinkError, Transient } from './index.js';

/** Stores `event` for `uplink`; returns its sequence number once it is on disk. */
export function send(event, uplink, { priority = 0, ttlMs } = {}) {
  try {
    return Number(
      witSend(event.toWit(), {
        uplink,
        priority,
        ttlMs: ttlMs === undefined ? undefined : BigInt(ttlMs),
      }),
    );
  } catch (e) {
    const payload = e && e.payload !== undefined ? e.payload : e;
    const reason = `outbox \`${uplink}\`: ${payload && payload.tag}: ${payload && payload.val}`;
    throw payload && payload.tag === 'full' ? new Transient(reason) : new BrinkError(reason);
  }
}
