// Human renderings of command results. Each is a pure function of the result object that --json prints.

import chalk from 'chalk'
import { cliName } from './cli-name.js'
import { printableInline as P } from './printable.js'
import type { DumpResult } from '../pipelines/dump.js'
import { humanBytes } from '../bundle/output-path.js'
import type { EndedCopy, ListedCopy } from '../pipelines/copies.js'
import type { RestoreResult } from '../pipelines/restore/index.js'
import type { InspectResult } from '../commands/inspect.js'
import type { ProcessRecord, ThreadCredsRecord } from '../bundle/manifest.js'
import type { VerifyResult } from '../bundle/verify.js'
import type { DoctorReport } from '../doctor/checks.js'
import { describeSignature } from '../bundle/trust.js'
import type { JournalListing, RecoveryAction } from '../pipelines/recover/index.js'

export function renderDumpResult(r: DumpResult): string {
  const lines = [
    `${chalk.green('bundle')}        ${P(r.bundle)} (${humanBytes(r.bundleSize)})`,
    `target        pid ${r.pid}: was ${r.originalState}, now ${r.finalState}${r.mode === 'core-only' ? ' (cores only, no checkpoint)' : ''}`,
    ...r.processes.map((p) => `process       ${p.pid} ${P(p.comm)}: ${p.threads} thread${p.threads === 1 ? '' : 's'}, found ${p.found}, left ${p.left}${p.core ? `, ${p.core}${p.coreStored === false ? ' (kept over the images: `snap core` writes it)' : ''}` : ''}`),
    ...r.criuOptions.map((c) => `criu option   ${P(c.option)}: ${P(c.reason)}`),
    `stop          ${P(r.normalization.note)}`,
    `freeze window ${r.freezeWindowMs.toFixed(1)} ms`,
    `steps         ${r.steps.map((s) => `${s.name} ${Math.round(s.durationMs)} ms`).join(', ')}`,
  ]
  for (const w of r.warnings) lines.push(chalk.yellow(`warning       ${P(w)}`))
  const stopped = r.processes.filter((p) => p.left === 'stopped').map((p) => p.pid)
  if (stopped.length > 0 && r.finalState !== 'killed')
    lines.push(`next          ${stopped.length === 1 ? 'it is' : 'they are'} left stopped: \`kill -CONT ${stopped.join(' ')}\` resumes ${stopped.length === 1 ? 'it' : 'them'}`)
  if (r.networkLockKept)
    lines.push(
      `next          its ${r.networkLockKept.connections} TCP connection(s) stay locked for the restore, their peers waiting: \`${cliName()} restore ${P(r.bundle)}\` lifts the lock; \`nft delete table inet ${r.networkLockKept.table}\` if no restore will come`,
    )
  return lines.join('\n')
}

export function renderRestoreResult(r: RestoreResult): string {
  const lines = [
    r.signature.state === 'verified'
      ? `signature     ${P(describeSignature(r.signature))}`
      : chalk.yellow(`signature     ${P(describeSignature(r.signature))}: restored because of --allow-unsigned`),
    `${chalk.green('restored')}      pid ${r.pid}${r.newPidns ? ` (pid ${r.pidInNamespace} in its new pid namespace)` : ''}, ${r.threads} thread${r.threads === 1 ? '' : 's'}, ${r.finalState}`,
    `states        ${r.states.map((s) => s.state).join(' -> ')}`,
    `durations     ${Object.entries(r.durations).map(([k, v]) => `${k} ${Math.round(v)} ms`).join(', ')}`,
  ]
  for (const w of r.warnings) lines.push(chalk.yellow(`warning       ${P(w)}`))
  const stopped = r.processes.filter((p) => p.left === 'stopped').map((p) => p.pid)
  if (stopped.length > 0) lines.push(`next          stopped as asked or as captured: \`kill -CONT ${stopped.join(' ')}\` runs ${stopped.length === 1 ? 'it' : 'them'}`)
  if (r.isolated) {
    const c = r.isolated
    lines.push(`isolated      namespaces ${c.namespaces.join(', ')}; connections closed, nothing leaves${c.limits.cpus !== undefined ? `; ${c.limits.cpus} CPU` : ''}${c.limits.memoryBytes !== undefined ? `; memory ${humanBytes(c.limits.memoryBytes)}` : ''}`)
    for (const p of c.published) lines.push(`published     ${p.host} -> port ${p.port} inside the copy`)
    lines.push(`next          enter it: \`${c.enter}\``)
    lines.push(`next          end it: \`${c.end}\``)
  } else if (r.newPidns) lines.push(`next          a copy in a pid namespace of its own: \`kill ${r.pid}\` ends it, and its namespace with it`)
  return lines.join('\n')
}

export function renderCopies(copies: ListedCopy[]): string {
  if (copies.length === 0) return 'no isolated copy on this host'
  return copies
    .map((c) => {
      const r = c.record
      const ports = r.forwarders.map((f) => `127.0.0.1:${f.hostPort}->${f.port}`).join(', ')
      return `copy          pid ${r.root.pid} of ${P(r.bundle)}, ${c.alive ? 'running' : 'gone (`snap copies --end ' + r.root.pid + '` removes what is left)'}${ports ? `, published ${ports}` : ''}, since ${r.createdAt}\n  enter       \`${r.enter}\``
    })
    .join('\n')
}

export function renderEndedCopies(ended: EndedCopy[]): string {
  return ended
    .map((e) => `${e.left.length === 0 ? chalk.green('ended') : chalk.red('not ended')}         copy ${e.root}${e.killed.length ? `: killed ${e.killed.join(', ')}` : ''}${e.left.length ? `; left: ${e.left.join('; ')}` : ''}`)
    .join('\n')
}

export function renderInspect(r: InspectResult): string {
  const m = r.manifest
  const t = m.target
  const lines = [
    `bundle        ${P(r.bundle.path)} (${humanBytes(r.bundle.size)}, ${r.bundle.compression}, schema v${m.schemaVersion})`,
    // Found by checking the signature against the trusted keys, never the manifest's own `signed`.
    `signature     ${P(describeSignature(r.signature))}`,
    `captured      ${P(m.createdAt)} on ${P(m.host.hostname)} (${P(m.host.kernelRelease)}, ${P(m.host.arch)}) by ${P(m.custody.user)} with ${P(m.tool.name)} ${P(m.tool.version)}`,
    `target        pid ${t.pid} ${P(t.comm)} (${P(t.exe)}), ${t.threads} thread${t.threads === 1 ? '' : 's'}, RSS ${t.vmRssKiB ?? '?'} KiB, uid ${t.uid}`,
    `command       ${P(t.cmdline.join(' '))}`,
    `state         found ${m.originalState.state}, left ${m.finalState}; ${P(m.normalization.note)}`,
    ...(m.processes ?? []).flatMap((p) => [
      `process       ${p.pid} ${P(p.comm)} (ppid ${p.ppid}): ${p.threads} thread${p.threads === 1 ? '' : 's'}, found ${p.found}, left ${p.left}${p.core ? `, ${p.core}${p.coreStored === false ? ' (kept over the images: `snap core` writes it)' : ''}` : ''}`,
      ...(p.sockets ?? []).map((k) => `  socket      fd ${k.fd} ${P(k.proto)} ${P(k.state) || '-'} ${P(k.local) || '-'}${k.remote ? ` -> ${P(k.remote)}` : ''}`),
      ...(p.files ?? []).map((f) => `  file        fd ${f.fd} ${P(f.path)}`),
      ...(p.namespaces ? [`  namespaces  ${Object.entries(p.namespaces).map(([k, v]) => `${k} ${P(v)}`).join(', ')}`] : []),
      ...(p.memory ?? []).slice(0, 6).map((u) => `  memory      ${P(u.mapping)}: ${humanBytes(u.rssKiB * 1024)} resident of ${humanBytes(u.sizeKiB * 1024)}`),
      ...threadCredsLines(p),
    ]),
    ...(t.envNames.length ? [`environment   ${t.envNames.map(P).join(' ')} (names only)`] : []),
    ...(m.tools.criu?.reasons ?? []).map((c) => `criu option   ${P(c.option)}: ${P(c.reason)}`),
    `freeze window ${m.freezeWindowMs.toFixed(1)} ms`,
    `steps         ${m.steps.map((s) => `${P(s.name)} ${Math.round(s.durationMs)} ms${s.status === 'ok' ? '' : ` (${s.status})`}`).join(', ')}`,
    `tools         ${m.tools.criu ? `criu ${P(m.tools.criu.version)} ${P(m.tools.criu.options.join(' '))}` : 'no checkpoint (core-only)'}; gdb ${P(m.tools.gdb.version)}`,
    `artifacts     ${m.artifacts.length} files, ${humanBytes(m.artifacts.reduce((s, a) => s + a.size, 0))}`,
  ]
  for (const a of m.artifacts.filter((a) => a.kind !== 'criu-image')) lines.push(`              ${P(a.path)} ${humanBytes(a.size)}`)
  for (const w of m.warnings) lines.push(chalk.yellow(`warning       ${P(w)}`))
  return lines.join('\n')
}

const credText = (v: ThreadCredsRecord[keyof ThreadCredsRecord]): string => (Array.isArray(v) ? `[${v.join(',')}]` : String(v))

/**
 * The threads of a process whose credentials (v4 manifests record every thread's) differ from its main thread's, each
 * with the fields that differ: a thread running as another user, or with other capabilities, is what a person
 * inspecting a capture needs to see first. Threads like their main thread are left out (--json has them all).
 */
function threadCredsLines(p: ProcessRecord): string[] {
  const all = p.threadCreds ?? []
  const main = all.find((t) => t.tid === p.pid) ?? all[0]
  if (!main) return []
  const lines: string[] = []
  for (const t of all) {
    if (t === main) continue
    if (!t.creds || !main.creds) {
      if (t.creds !== main.creds) lines.push(`  thread      ${t.tid}: ${t.creds ? 'credentials recorded, none for the main thread' : 'no credentials recorded'}`)
      continue
    }
    const differ = (Object.keys(main.creds) as (keyof ThreadCredsRecord)[]).filter((k) => credText(t.creds![k]) !== credText(main.creds![k]))
    if (differ.length > 0)
      lines.push(`  thread      ${t.tid}: credentials differ from the main thread's (${main.tid}): ${differ.map((k) => `${k} ${P(credText(t.creds![k]))} (main ${P(credText(main.creds![k]))})`).join(', ')}`)
  }
  return lines
}

export function renderVerify(r: VerifyResult): string {
  if (r.ok) return `${chalk.green('ok')}  ${P(r.bundle)}: ${r.artifacts} artifacts, ${humanBytes(r.bytes)} checked, ${P(describeSignature(r.signature!))}`
  // An invalid signature is among the problems already; any other state is said once, after them.
  const signature = r.signature && r.signature.state !== 'invalid' ? [`  ${P(describeSignature(r.signature))}`] : []
  return [`${chalk.red('FAILED')}  ${P(r.bundle)}`, ...r.problems.map((p) => `  ${P(p)}`), ...signature].join('\n')
}

export function renderDoctor(r: DoctorReport): string {
  const mark = (ok: boolean) => (ok ? chalk.green('ok  ') : chalk.red('FAIL'))
  const yes = (has: boolean) => (has ? 'yes' : 'no')
  // One column for every row's label, as wide as the widest (a helper such as iptables is wider than `criu`).
  const width = Math.max(7, ...r.helpers.map((h) => h.name.length))
  const row = (mark: string, label: string, text: string) => `${mark} ${label.padEnd(width)} ${text}`
  const lines = [
    row(mark(r.criu.ok), 'criu', `${r.criu.path ?? '-'} ${r.criu.version ?? ''} (need >= ${r.criu.minimum})${r.criu.check ? `; criu check: ${r.criu.check.ok ? 'passes' : 'FAILS'}` : ''}`),
    row(mark(r.gdb.ok), 'gdb', `${r.gdb.path ?? '-'} ${r.gdb.version ?? ''} (need >= ${r.gdb.minimum})`),
    row('    ', 'kernel', `${r.kernel.release} ${r.kernel.arch}; ptrace_scope ${r.ptraceScope ?? 'absent (no Yama)'}`),
    row(
      '    ',
      'access',
      `uid ${r.uid}; CAP_SYS_PTRACE ${yes(r.capabilities.sysPtrace)}, CAP_SYS_ADMIN ${yes(r.capabilities.sysAdmin)}, CAP_CHECKPOINT_RESTORE ${yes(r.capabilities.checkpointRestore)}, CAP_SYS_RESOURCE ${yes(r.capabilities.sysResource)}`,
    ),
  ]
  for (const h of r.helpers)
    lines.push(row(h.path ? chalk.green('ok  ') : h.required ? chalk.red('FAIL') : chalk.yellow('miss'), h.name, `${h.path ?? 'not found'} (${h.usedFor})`))
  for (const x of r.ruledOut) lines.push(chalk.yellow(`without ${x.missing}: no ${x.rulesOut}`))
  if (r.canary) for (const s of r.canary.steps) lines.push(row(mark(s.ok), 'canary', `${s.what}: ${s.detail}`))
  const k = r.trustedKeys
  lines.push(
    row(mark(k.ignored.length === 0), 'keys', `${P(k.dir)}: ${k.trusted.length} trusted${k.ignored.length ? `, ${k.ignored.length} ignored` : ''}`) +
      (k.trusted.length ? ` (${k.trusted.map((t) => `${P(t.path)} ${t.fingerprint}`).join(', ')})` : ''),
  )
  for (const l of r.networkLocks.filter((x) => x.ownerRunning)) lines.push(chalk.yellow(row('    ', 'netlock', `${l.lock} (a criu is running: it may be its own)`)))
  for (const l of r.networkLocks.filter((x) => x.keptFor && !x.ownerRunning))
    lines.push(chalk.yellow(row('    ', 'netlock', `${l.lock} kept for the restore of ${P(l.keptFor!)}: \`${cliName()} restore\` lifts it; \`${l.remove}\` if none will come`)))
  for (const p of r.problems) lines.push(chalk.red(`problem: ${p.what}`), `  fix: ${p.fix}`)
  if (r.ok) lines.push(chalk.green(`${cliName()} can capture and restore processes on this host`))
  return lines.join('\n')
}

export function renderRecover(rs: RecoveryAction[], o: { dryRun?: boolean; pid?: number } = {}): string {
  if (rs.length === 0) return o.pid !== undefined ? `nothing to recover for target ${o.pid}` : 'nothing to recover'
  const lines = rs.map((r) => `${(o.dryRun ? `${r.outcome}?` : r.outcome).padEnd(13)} target ${r.targetPid ?? '?'} (snap ${r.snapPid ?? '?'}): ${P(r.actions.join('; '))}`)
  if (o.dryRun) lines.push('dry run: nothing was done; run the same without --dry-run to do it')
  return lines.join('\n')
}

export function renderJournalList(js: JournalListing[]): string {
  if (js.length === 0) return 'no journal: no snap is at work and none died half way'
  const lines = js.map((j) => {
    const what = j.status === 'unreadable' ? 'unreadable journal' : `${j.operation} by snap ${j.snapPid}, at ${j.step}${j.touched ? '' : ', target never signalled'}, last written ${j.updatedAt}`
    const status = j.status === 'running' ? 'at work' : j.status === 'left' ? 'left' : 'unreadable'
    return `${status.padEnd(10)} target ${j.targetPid ?? '?'}: ${P(what)}`
  })
  const left = js.filter((j) => j.status !== 'running')
  if (left.length > 0) lines.push(`\`snap recover PID --dry-run\` says what recover would do for one of them; \`snap recover PID\` does it`)
  return lines.join('\n')
}
