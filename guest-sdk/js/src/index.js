// Write Brink edge functions in JavaScript.
//
// A function is a plain function from one Event to zero, one or many events,
// exported as the contract's `handler` and built with `brink build`
// (componentize-js):
//
//   import { Event, defineHandler } from 'brink';
//   export const handler = defineHandler((event) => {
//     const reading = event.json();
//     return new Event({ type: 'com.example.doubled', source: event.source, json: reading });
//   });
//
// A handler returns an Event, an array of them, or null/undefined (the event
// is dropped). Failures are thrown: InvalidEvent (retrying cannot help),
// Transient (the host may retry); anything else is an internal error that
// names its type. Key-value state and the outbox live in 'brink/kv' and
// 'brink/outbox', imported only by functions that declare them.

import { log as witLog } from 'brink:edge/log@0.1.3';
import { get as witConfigGet } from 'brink:edge/config@0.1.3';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A handler failure with a kind the host acts on. */
export class BrinkError extends Error {
  constructor(message, kind = 'internal') {
    super(message);
    this.name = 'BrinkError';
    this.kind = kind;
  }
}

/** The event itself is unusable for this function: retrying cannot help. */
export class InvalidEvent extends BrinkError {
  constructor(message) {
    super(message, 'invalid-event');
    this.name = 'InvalidEvent';
  }
}

/** A transient failure: the host may retry the event. */
export class Transient extends BrinkError {
  constructor(message) {
    super(message, 'transient');
    this.name = 'Transient';
  }
}

/** One CloudEvent 1.0. On output, `id` may be empty: the host fills it in. */
export class Event {
  constructor({
    type,
    source,
    id = '',
    subject,
    time,
    datacontenttype,
    dataschema,
    extensions = {},
    data,
    json,
  } = {}) {
    if (typeof type !== 'string' || !type) throw new BrinkError('an Event needs a `type`');
    if (typeof source !== 'string' || !source) throw new BrinkError('an Event needs a `source`');
    this.id = id;
    this.source = source;
    this.type = type;
    this.specversion = '1.0';
    this.subject = subject;
    this.time = time;
    this.datacontenttype = datacontenttype;
    this.dataschema = dataschema;
    this.extensions = { ...extensions };
    this.data = typeof data === 'string' ? encoder.encode(data) : data;
    if (json !== undefined) this.setJson(json);
  }

  /** The data decoded as JSON; InvalidEvent when there is none or it does not decode. */
  json() {
    if (this.data === undefined || this.data === null) {
      throw new InvalidEvent(`event ${this.id} has no data`);
    }
    try {
      return JSON.parse(decoder.decode(this.data));
    } catch (e) {
      throw new InvalidEvent(`event ${this.id} data is not JSON: ${e.message}`);
    }
  }

  /** Sets the data to `value` as JSON; returns the event. */
  setJson(value) {
    this.data = encoder.encode(JSON.stringify(value));
    this.datacontenttype = 'application/json';
    return this;
  }

  /** The data as UTF-8 text ('' when there is none). */
  text() {
    return this.data ? decoder.decode(this.data) : '';
  }

  /** The value of an extension attribute, or undefined. */
  extension(name) {
    return this.extensions[name];
  }

  /** @internal From the contract's record. */
  static fromWit(wit) {
    const event = new Event({
      type: wit.type,
      source: wit.source,
      id: wit.id,
      subject: wit.subject,
      time: wit.time,
      datacontenttype: wit.datacontenttype,
      dataschema: wit.dataschema,
      extensions: Object.fromEntries(wit.extensions),
      data: wit.data,
    });
    event.specversion = wit.specversion;
    return event;
  }

  /** @internal To the contract's record. */
  toWit() {
    return {
      id: this.id ?? '',
      source: this.source,
      type: this.type,
      specversion: this.specversion || '1.0',
      subject: this.subject ?? undefined,
      time: this.time ?? undefined,
      datacontenttype: this.datacontenttype ?? undefined,
      dataschema: this.dataschema ?? undefined,
      extensions: Object.entries(this.extensions ?? {}).map(([k, v]) => [String(k), String(v)]),
      data: this.data ?? undefined,
    };
  }
}

/** The contract's handler-error for any thrown value. */
export function handlerError(e) {
  if (e instanceof BrinkError) return { kind: e.kind, message: e.message };
  if (e instanceof Error) return { kind: 'internal', message: `${e.name}: ${e.message}` };
  return { kind: 'internal', message: `thrown: ${String(e)}` };
}

function outputs(result) {
  if (result === undefined || result === null) return [];
  const list = Array.isArray(result) ? result : [result];
  return list.map((e) => {
    if (!(e instanceof Event)) {
      throw new BrinkError('a handler returns an Event, an array of them, or null');
    }
    return e.toWit();
  });
}

/**
 * The contract's `handler` export for `fn`: export it as `handler`.
 * Errors thrown by `fn` become the handler's error result, never a trap.
 */
export function defineHandler(fn) {
  return {
    handle(event) {
      try {
        return outputs(fn(Event.fromWit(event)));
      } catch (e) {
        throw handlerError(e);
      }
    },
  };
}

/** Configuration values from the function's spec (`config = { key = "value" }`). */
export const config = {
  /** The raw value of `key`, or undefined. */
  get(key) {
    return witConfigGet(key) ?? undefined;
  },
  /** The value of `key`, parsed with `parse`; an error when it is unset or does not parse. */
  require(key, parse = (s) => s) {
    const raw = witConfigGet(key);
    if (raw === undefined || raw === null) {
      throw new BrinkError(`config \`${key}\` is not set in the function's spec`);
    }
    const value = parse(raw);
    if (typeof value === 'number' && Number.isNaN(value)) {
      throw new BrinkError(`config \`${key}\` = ${JSON.stringify(raw)} is not a number`);
    }
    return value;
  },
};

/** Structured logging into the host's log. */
export const log = {
  trace: (message) => witLog('trace', String(message)),
  debug: (message) => witLog('debug', String(message)),
  info: (message) => witLog('info', String(message)),
  warn: (message) => witLog('warn', String(message)),
  error: (message) => witLog('error', String(message)),
};
