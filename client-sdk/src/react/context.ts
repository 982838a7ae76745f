/** The provider, access to its client, and the connection state as React state. */
import {
  createContext,
  createElement,
  useContext,
  useEffect,
  useState,
  useSyncExternalStore,
  type ReactElement,
  type ReactNode,
} from 'react';
import { HeraldClient } from '../client';
import type { HeraldClientOptions, State } from '../types';

const HeraldContext = createContext<HeraldClient<any> | null>(null);

export interface HeraldProviderProps {
  /** A client you created (connected on mount, never closed by the provider)… */
  client?: HeraldClient<any>;
  /** …or options for a client the provider creates, connects, and closes on unmount. */
  options?: HeraldClientOptions;
  children?: ReactNode;
}

export function HeraldProvider({ client, options, children }: HeraldProviderProps): ReactElement {
  const [owned] = useState(() => {
    if (client) return null;
    if (!options) throw new Error('HeraldProvider needs a `client` or `options` prop');
    return new HeraldClient(options);
  });
  const active = client ?? owned!;
  useEffect(() => {
    active.connect();
    return () => {
      if (active === owned) active.close();
    };
  }, [active, owned]);
  return createElement(HeraldContext.Provider, { value: active }, children);
}

/** The provider's client. */
export function useHeraldClient<M extends object = Record<string, unknown>>(): HeraldClient<M> {
  const client = useContext(HeraldContext);
  if (!client) throw new Error('Herald hooks must be used inside <HeraldProvider>');
  return client as HeraldClient<M>;
}

/** `disconnected` | `connecting` | `connected`, re-rendering on change. */
export function useConnectionState(): State {
  const client = useHeraldClient();
  return useSyncExternalStore(
    (onChange) => client.on('state', onChange),
    () => client.state,
    () => client.state,
  );
}
