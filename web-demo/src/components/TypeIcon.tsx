/** A small icon per notification type (decorative: the type is also written out as text). */
const PATHS: Record<string, string> = {
  // star
  welcome: 'M12 3l2.6 5.6 6.1.7-4.5 4.2 1.2 6L12 16.6 6.6 19.5l1.2-6-4.5-4.2 6.1-.7z',
  // briefcase
  stage:
    'M9 4h6a2 2 0 0 1 2 2v1h3a1 1 0 0 1 1 1v10a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V8a1 1 0 0 1 1-1h3V6a2 2 0 0 1 2-2zm0 3h6V6H9z',
  // calendar
  availability:
    'M7 2h2v2h6V2h2v2h2a2 2 0 0 1 2 2v13a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2h2zm-2 7v10h14V9zm2 2h4v4H7z',
  // shield
  security: 'M12 2l8 3v6c0 5-3.4 9.4-8 11-4.6-1.6-8-6-8-11V5z',
  // triangle
  warning: 'M12 3l10 18H2zm-1 6v6h2V9zm0 8v2h2v-2z',
  // check
  evaluation: 'M9 16.2l-4.2-4.2L3.4 13.4 9 19 21 7l-1.4-1.4z',
  // info
  info: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm-1 8h2v7h-2zm0-3h2v2h-2z',
};
// bell
const FALLBACK =
  'M12 2a6 6 0 0 0-6 6v3.6l-1.7 2.9A1 1 0 0 0 5.2 16h13.6a1 1 0 0 0 .9-1.5L18 11.6V8a6 6 0 0 0-6-6Zm-2.8 16a2.9 2.9 0 0 0 5.6 0H9.2Z';

export function TypeIcon({ type }: { type: string }) {
  const known = type in PATHS ? type : 'other';
  return (
    <span className={`type-icon type-${known}`} aria-hidden="true">
      <svg viewBox="0 0 24 24" width="18" height="18" focusable="false">
        <path fill="currentColor" d={PATHS[type] ?? FALLBACK} />
      </svg>
    </span>
  );
}
