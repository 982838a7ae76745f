import { NotificationPreferences } from '@herald/client/ui';
import { TYPE_LABELS } from '../catalog';

/**
 * The demo's settings panel: `<NotificationPreferences>` from `@herald/client/ui` (its heading, its hint and a
 * switch per notification type, saved at once), with the catalog's words for the types. A muted type is still
 * stored and listed in the inbox, but neither pushed live (no toast) nor counted.
 */
export function Settings() {
  return (
    <div id="settings" className="panel settings">
      <NotificationPreferences labels={TYPE_LABELS} />
      <p className="hint settings-tip">
        Try it: mute <strong>{TYPE_LABELS.availability}</strong>, then publish "Referee availability closed". No toast,
        no count; it is stored all the same (see Routing results) and is in the inbox the next time it loads.
      </p>
    </div>
  );
}
