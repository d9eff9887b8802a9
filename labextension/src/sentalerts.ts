/**
 * Which alerts this browser tab has shown: kept in its sessionStorage, so that a page reload does not show
 * again what the user has dismissed (a kernel in the clear stays in the clear), while a new tab starts
 * afresh. Other sets of keys the front end remembers (dismissed ended kernels) are kept alike.
 */
import type { ISentAlerts } from './alerts';

/** The part of the Web Storage API used here (sessionStorage in the browser, a Map in the tests). */
export interface IKeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

const ITEM = 'jupyter-asgard:sent-alerts';

/** A set of keys kept as a JSON list under one item of a store, that outlives the page. */
export class StoredKeys {
  /** store: null where the browser offers none (storage disabled); the keys then last as long as the page. */
  constructor(
    private readonly store: IKeyValueStore | null,
    private readonly item: string
  ) {
    this.keys = new Set(load(store, item));
  }

  has(key: string): boolean {
    return this.keys.has(key);
  }

  /** Add a key, and forget those `keep` says no longer matter. */
  add(key: string, keep: (known: string) => boolean = () => true): void {
    this.keys = new Set([...this.keys].filter(keep));
    this.keys.add(key);
    try {
      this.store?.setItem(this.item, JSON.stringify([...this.keys]));
    } catch {
      // full or refused: this page still remembers
    }
  }

  private keys: Set<string>;
}

export class SentAlerts extends StoredKeys implements ISentAlerts {
  constructor(store: IKeyValueStore | null) {
    super(store, ITEM);
  }
}

/** The keys stored by an earlier page; none where there are none or they are unreadable. */
function load(store: IKeyValueStore | null, item: string): string[] {
  try {
    const stored: unknown = JSON.parse(store?.getItem(item) ?? '[]');
    return Array.isArray(stored) ? stored.filter((key): key is string => typeof key === 'string') : [];
  } catch {
    return [];
  }
}
