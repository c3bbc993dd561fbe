// TypeScript types of 'brink/outbox'.
import type { Event } from './index.js';
export function send(event: Event, uplink: string, options?: { priority?: number; ttlMs?: number }): number;
