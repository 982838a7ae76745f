import { Toasts as HeraldToasts } from '@herald/client/ui';
import { TypeIcon } from './TypeIcon';

/** How long a toast stays (not counting the time it is hovered or focused). */
export const VISIBLE_MS = 5000;

/**
 * `<Toasts>` from `@herald/client/ui`: one per notification pushed to this tab, announced politely, 5 s each,
 * paused while hovered or focused. Bottom-left on wide screens, away from the inbox column; at the top on phones
 * (styles.css).
 */
export function Toasts() {
  return <HeraldToasts duration={VISIBLE_MS} renderIcon={(n) => <TypeIcon type={n.type} />} />;
}
