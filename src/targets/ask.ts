// Asks a service manager's or a runtime's CLI a question, bounded: a CLI that is absent, fails or hangs answers
// nothing (undefined), and the resolver tries its next way.

import { execFile } from 'node:child_process'

export const ASK_TIMEOUT_MS = 5000

export interface Answer {
  stdout: string
}

export function ask(command: string, args: string[], timeoutMs = ASK_TIMEOUT_MS): Promise<Answer | undefined> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1024 * 1024, encoding: 'utf8' }, (error, stdout) => {
      resolve(error ? undefined : { stdout })
    })
  })
}
