/** The provider, access to its client, and the connection state as React state. */
import {
  createContext,
  createElement,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useSyncExternalStore,
  type ReactElement,
  type ReactNode,
} from 'react';
import { HeraldClient } from '../client';
import { getInboxStore } from '../store';
import { State, type HeraldClientOptions } from '../types';

const HeraldContext = createContext<HeraldClient<any> | null>(null);

export interface HeraldProviderProps {
  /** A client you created (connected on mount, never closed by the provider)… */
  client?: HeraldClient<any>;
  /**
   * …or options for a client the provider creates, connects, and closes on unmount. A change of `url`,
   * `userId`, `tokenIn`, `connectTimeoutMs`, `requestTimeoutMs`, `maxTokenFailures`, `backoff`, `since`, `debug`,
   * `WebSocket` or `fetch` closes that
   * client and opens a new one (the hooks follow it); a new object with the same values does not. `getToken` is
   * always called through the latest props, so a new function needs no new client; a new `getToken` while the
   * client is `unauthorized` makes it connect again (keep it stable, e.g. with `useCallback`, otherwise).
   */
  options?: HeraldClientOptions;
  children?: ReactNode;
}

export function HeraldProvider({ client, options, children }: HeraldProviderProps): ReactElement {
  if (!client && !options) throw new Error('HeraldProvider needs a `client` or `options` prop');
  const latest = useRef(options);
  latest.current = options;
  const o = options;
  const owned = useMemo(
    () =>
      client || !o
        ? null
        : new HeraldClient({
            ...o,
            getToken: () => (latest.current ?? o).getToken(),
          }),
    // The values that shape a client (see `options`); getToken is read through `latest`.
    [
      client,
      o?.url,
      o && String(o.userId),
      o?.tokenIn,
      o?.connectTimeoutMs,
      o?.requestTimeoutMs,
      o?.maxTokenFailures,
      o?.debug,
      o?.WebSocket,
      o?.fetch,
      JSON.stringify(o?.backoff ?? null),
      JSON.stringify(o?.since ?? null),
    ],
  );
  const active = client ?? owned!;
  // The inbox store listens before the client connects, so the `counts` frame after `ready` is not missed.
  getInboxStore(active);
  useEffect(() => {
    active.connect();
    return () => {
      if (active === owned) active.close();
    };
  }, [active, owned]);
  // A new getToken (the user signed in again) gets a client stopped by a refused token going again.
  const getToken = options?.getToken;
  useEffect(() => {
    if (active === owned && active.state === State.Unauthorized) active.connect();
  }, [getToken, active, owned]);
  return createElement(HeraldContext.Provider, { value: active }, children);
}

/** The provider's client. */
export function useHeraldClient<M extends object = Record<string, unknown>>(): HeraldClient<M> {
  const client = useContext(HeraldContext);
  if (!client) throw new Error('Herald hooks must be used inside <HeraldProvider>');
  return client as HeraldClient<M>;
}

/** `disconnected` | `connecting` | `connected` | `unauthorized`, re-rendering on change. */
export function useConnectionState(): State {
  const client = useHeraldClient();
  return useSyncExternalStore(
    (onChange) => client.on('state', onChange),
    () => client.state,
    () => client.state,
  );
}
