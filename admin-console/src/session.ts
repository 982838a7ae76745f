// The admin key lives in this tab only (sessionStorage): gone when the tab closes, never shared with other tabs
// or written to localStorage or a cookie.

const KEY = 'herald.admin.key';

export interface KeyStore {
  getItem(k: string): string | null;
  setItem(k: string, v: string): void;
  removeItem(k: string): void;
}

export function loadKey(store: KeyStore = sessionStorage): string | null {
  const v = store.getItem(KEY);
  return v && v.trim() ? v : null;
}

export function saveKey(key: string, store: KeyStore = sessionStorage): void {
  store.setItem(KEY, key.trim());
}

export function forgetKey(store: KeyStore = sessionStorage): void {
  store.removeItem(KEY);
}
