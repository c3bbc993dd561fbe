// TypeScript types of 'brink/kv'.
export class Bucket {
  constructor(name: string);
  readonly name: string;
  get(key: string): Uint8Array | undefined;
  getJson<T = any>(key: string): T | undefined;
  set(key: string, value: Uint8Array | string): void;
  setJson(key: string, value: unknown): void;
  setWithTtl(key: string, value: Uint8Array | string, ttlMs: number): void;
  delete(key: string): void;
  exists(key: string): boolean;
  increment(key: string, delta: number): number;
  keysWithPrefix(prefix: string): string[];
}
export function bucket(name: string): Bucket;
