// --probe URL: the hang detector. An HTTP GET (http://HOST:PORT/PATH) that fails, answers 5xx or takes longer than
// --probe-timeout, or a TCP connect (tcp://HOST:PORT) that fails or takes longer: --failures such probes in a row
// (and for --for) fire it. A service that burns no CPU while it hangs is seen this way only. One probe at a time: a
// poll while one is still out reads nothing new.

import { request } from 'node:http'
import { connect } from 'node:net'
import { UsageError } from '../errors.js'
import { formatDuration } from './units.js'
import { spans, type Sample, type Trigger } from './trigger.js'

export type ProbeTarget = { kind: 'http'; url: URL } | { kind: 'tcp'; host: string; port: number }

export function parseProbe(raw: string): ProbeTarget {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new UsageError(`--probe '${raw}' is not a URL`, 'give it as http://127.0.0.1:8080/health or tcp://127.0.0.1:5432')
  }
  if (url.protocol === 'http:') return { kind: 'http', url }
  if (url.protocol === 'tcp:' && url.hostname && url.port) return { kind: 'tcp', host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port) }
  throw new UsageError(`--probe '${raw}': only http://HOST[:PORT]/PATH and tcp://HOST:PORT are probed`, 'give it as http://127.0.0.1:8080/health or tcp://127.0.0.1:5432')
}

/** One probe: its latency in ms when it passed, null (with what happened) when it failed. */
export function probeOnce(target: ProbeTarget, timeoutMs: number): Promise<{ value: number | null; detail: string }> {
  const t0 = performance.now()
  const ms = () => Math.round(performance.now() - t0)
  return new Promise((resolve) => {
    let done = false
    const finish = (value: number | null, detail: string) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resolve({ value, detail })
    }
    const timer = setTimeout(() => {
      finish(null, `no answer within ${timeoutMs} ms`)
      cleanup()
    }, timeoutMs)
    let cleanup = () => undefined as void
    if (target.kind === 'tcp') {
      const socket = connect({ host: target.host, port: target.port })
      cleanup = () => socket.destroy()
      socket.once('connect', () => {
        finish(ms(), `connected in ${ms()} ms`)
        socket.destroy()
      })
      socket.once('error', (e: NodeJS.ErrnoException) => finish(null, `connect failed: ${e.code ?? e.message}`))
      return
    }
    const req = request(target.url, { method: 'GET', agent: false, headers: { connection: 'close' } }, (res) => {
      const status = res.statusCode ?? 0
      res.resume()
      res.once('end', () => finish(status >= 500 ? null : ms(), `HTTP ${status} in ${ms()} ms`))
      res.once('error', (e) => finish(null, `the answer broke off: ${e.message}`))
    })
    cleanup = () => req.destroy()
    req.once('error', (e: NodeJS.ErrnoException) => finish(null, `GET failed: ${e.code ?? e.message}`))
    req.end()
  })
}

export function probeTrigger(raw: string, timeoutMs: number, failures: number, forMs: number): Trigger {
  const target = parseProbe(raw)
  let inFlight = false
  let done: Sample | undefined
  return {
    kind: 'probe',
    condition: `probe ${raw} failing (error, 5xx or over ${formatDuration(timeoutMs)}) ${failures} times in a row${forMs > 0 ? ` for ${formatDuration(forMs)}` : ''}`,
    needsTree: false,
    read(): Sample | undefined {
      const finished = done
      done = undefined
      if (!inFlight) {
        inFlight = true
        void probeOnce(target, timeoutMs).then((r) => {
          inFlight = false
          done = { at: Date.now(), value: r.value, detail: r.detail }
        })
      }
      return finished
    },
    crosses: (s) => s.value === null,
    fired: (run) => run.length >= failures && spans(run, forMs),
    show: (s) => `probe ${s.detail ?? '-'}`,
    reset: () => {
      done = undefined
    },
  }
}
