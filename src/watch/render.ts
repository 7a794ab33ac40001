// One line for people per watch event, on stderr (the --json form is the event itself).

import type { WatchEvent } from './loop.js'

export function describeEvent(e: WatchEvent): string {
  switch (e.event) {
    case 'watching':
      return `watching ${e.target} (pid ${e.pid}) for: ${e.triggers.join('; ')}`
    case 'fired': {
      const last = e.samples.at(-1)
      return `fired: ${e.condition} (last seen ${last?.detail ?? last?.value ?? '-'}, ${e.samples.length} sample(s))`
    }
    case 'captured':
      return `captured ${e.capture}: ${e.upload ?? e.bundle}`
    case 'target-gone':
      return `the target ${e.pid} is gone: looking for it again once a poll (--follow)`
    case 'target-back':
      return `the target is back as pid ${e.pid} (was ${e.previous})`
    case 'skipped':
      return `skipped (${e.trigger}): ${e.message}`
    case 'capture-failed':
      return `capture failed (${e.trigger}, exit ${e.exitCode}): ${e.message}`
    case 'stopped':
      return `watch ended (${e.reason === 'count' ? 'all captures taken' : e.reason === 'until' ? '--until reached' : e.reason === 'signal' ? 'asked to stop' : 'the target is gone'}), ${e.captures} capture(s)`
  }
}
