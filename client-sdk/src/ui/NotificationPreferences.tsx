import { useState } from 'react';
import { Alert } from './Alert';
import type { HeraldError } from '../errors';
import { preferenceRow, usePreferences } from '../react/preferences';
import { cx, useDomId, useStrings, type CommonProps } from './shared';

export interface NotificationPreferencesProps extends CommonProps {
  /** Display names by type (default: the type with `_`, `-` and `.` as spaces, its first letter capitalised). */
  labels?: Record<string, string>;
  /** Show only these types, in this order (default: every type the gateway knows, the user set or has a default). */
  types?: string[];
  /**
   * Called with every failed change. The component shows it too (`role="alert"`, until closed or the next change
   * works), and the switch goes back.
   */
  onError?: (error: HeraldError) => void;
}

/** `stage.accepted` → `Stage accepted`. */
export function typeLabel(type: string): string {
  const words = type.replace(/[_.-]+/g, ' ').trim() || type;
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/**
 * The user's notification settings: a switch per type (on, or muted: still in the inbox, neither pushed nor
 * counted), changed at once and put back if the server refuses; loading, load-failed (with a retry) and empty
 * states.
 */
export function NotificationPreferences(props: NotificationPreferencesProps) {
  const s = useStrings(props.locale, props.strings);
  const prefs = usePreferences();
  const [actionError, setActionError] = useState<HeraldError | null>(null);
  const titleId = useDomId('herald-prefs-title');
  const hintId = useDomId('herald-prefs-hint');
  const { preferences } = prefs;
  const rows = preferences && props.types ? props.types.map((t) => preferenceRow(preferences, t)) : prefs.types;

  const toggle = async (type: string, on: boolean) => {
    const error = await prefs.set(type, on ? 'muted' : 'on');
    setActionError(error);
    if (error) props.onError?.(error);
  };

  return (
    <section
      className={cx('herald', 'herald-prefs', props.className)}
      data-theme={props.theme}
      aria-labelledby={titleId}
      aria-describedby={hintId}
    >
      <h2 id={titleId} className="herald-inbox__title">
        {s.preferencesTitle}
      </h2>
      <p id={hintId} className="herald-prefs__hint">
        {s.preferencesHint}
      </p>
      {actionError && <Alert text={s.actionFailed} action={s.close} onAction={() => setActionError(null)} />}
      {prefs.error && (
        <Alert text={s.preferencesLoadFailed} action={s.retry} primary onAction={() => void prefs.refresh()} />
      )}
      {prefs.loading && (
        <p className="herald-hint" role="status">
          {s.loading}
        </p>
      )}
      {preferences && rows.length === 0 && <p className="herald-empty">{s.preferencesEmpty}</p>}
      {rows.length > 0 && (
        <ul className="herald-list" aria-labelledby={titleId}>
          {rows.map((r) => (
            <Row
              key={r.type}
              label={props.labels?.[r.type] ?? typeLabel(r.type)}
              on={r.setting === 'on'}
              text={r.setting === 'on' ? s.preferenceOn : s.preferenceMuted}
              onToggle={() => void toggle(r.type, r.setting === 'on')}
            />
          ))}
        </ul>
      )}
    </section>
  );
}

function Row({ label, on, text, onToggle }: { label: string; on: boolean; text: string; onToggle: () => void }) {
  const labelId = useDomId('herald-pref');
  return (
    <li className="herald-pref">
      <span id={labelId} className="herald-pref__label">
        {label}
      </span>
      <button
        type="button"
        role="switch"
        aria-checked={on}
        aria-labelledby={labelId}
        className="herald-switch"
        onClick={onToggle}
      >
        <span className="herald-switch__text">{text}</span>
        <span className="herald-switch__track" aria-hidden="true">
          <span className="herald-switch__thumb" />
        </span>
      </button>
    </li>
  );
}
