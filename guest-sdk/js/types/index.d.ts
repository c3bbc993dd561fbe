// TypeScript types of the Brink JavaScript SDK ('brink').

/** The contract's cloud-event record (brink:edge/types@0.1.3). */
export interface CloudEvent {
  id: string;
  source: string;
  type: string;
  specversion: string;
  subject?: string;
  time?: string;
  datacontenttype?: string;
  dataschema?: string;
  extensions: Array<[string, string]>;
  data?: Uint8Array;
}

/** The contract's error-kind enum. */
export type ErrorKind = 'invalid-event' | 'transient' | 'internal';

/** The contract's handler-error record. */
export interface HandlerError {
  kind: ErrorKind;
  message: string;
}

export interface EventInit {
  type: string;
  source: string;
  id?: string;
  subject?: string;
  time?: string;
  datacontenttype?: string;
  dataschema?: string;
  extensions?: Record<string, string>;
  data?: Uint8Array | string;
  /** Sets `data` to this value as JSON, and the content type. */
  json?: unknown;
}

/** One CloudEvent 1.0. On output, `id` may be empty: the host fills it in. */
export class Event {
  constructor(init: EventInit);
  id: string;
  source: string;
  type: string;
  specversion: string;
  subject?: string;
  time?: string;
  datacontenttype?: string;
  dataschema?: string;
  extensions: Record<string, string>;
  data?: Uint8Array;
  /** The data decoded as JSON; throws InvalidEvent when there is none or it does not decode. */
  json<T = any>(): T;
  /** Sets the data to `value` as JSON; returns the event. */
  setJson(value: unknown): this;
  /** The data as UTF-8 text. */
  text(): string;
  extension(name: string): string | undefined;
  static fromWit(wit: CloudEvent): Event;
  toWit(): CloudEvent;
}

export class BrinkError extends Error {
  constructor(message: string, kind?: ErrorKind);
  kind: ErrorKind;
}
export class InvalidEvent extends BrinkError {
  constructor(message: string);
}
export class Transient extends BrinkError {
  constructor(message: string);
}

export function handlerError(e: unknown): HandlerError;

/** What a handler may return: an event, several, or nothing (dropped). */
export type HandlerResult = Event | Event[] | null | undefined;

/** The contract's `handler` export (brink:edge/handler@0.1.3). */
export interface Handler {
  handle(event: CloudEvent): CloudEvent[];
}

export function defineHandler(fn: (event: Event) => HandlerResult): Handler;

export const config: {
  get(key: string): string | undefined;
  require<T = string>(key: string, parse?: (raw: string) => T): T;
};

export const log: {
  trace(message: unknown): void;
  debug(message: unknown): void;
  info(message: unknown): void;
  warn(message: unknown): void;
  error(message: unknown): void;
};
