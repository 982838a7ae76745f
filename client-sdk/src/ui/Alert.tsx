/** A message read out at once (`role="alert"`), with one button: close it, or try again. */
export function Alert({
  text,
  action,
  primary,
  onAction,
}: {
  text: string;
  /** The button's words (`close`, `retry`). */
  action: string;
  /** A filled button (try again) rather than a ghost one (close). */
  primary?: boolean;
  onAction: () => void;
}) {
  return (
    <div className="herald-error" role="alert">
      <p>{text}</p>
      <button type="button" className={primary ? 'herald-btn' : 'herald-btn herald-btn--ghost'} onClick={onAction}>
        {action}
      </button>
    </div>
  );
}
