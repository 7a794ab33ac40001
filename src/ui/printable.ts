// Strings that come from a bundle or from a target (a comm, an argv, a hostname, a file name) can hold terminal
// escape sequences: shown raw, they clear the screen, set the clipboard (OSC 52) or forge a line of snap's own
// output. Every such string is made printable before it reaches a terminal: controls are shown, never obeyed.

/** C0 controls but tab and newline, DEL, and C1 controls become a visible \xNN; lines stay lines. */
export function printable(s: string): string {
  return s.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** The same for one line: a newline is shown too, so a value cannot start a line of its own. */
export function printableInline(s: string): string {
  return printable(s).replace(/\n/g, '\\n').replace(/\t/g, '\\t')
}
