// --publish: a port on the host's 127.0.0.1 forwarded into an isolated copy's network namespace, the only way in.
//
// One small python3 process per published port: it binds and listens on the host side first, then enters the copy's
// network namespace (setns), so every connection it makes from then on is made inside; it relays bytes both ways and
// exits when the copy's namespace holder does (a pidfd of it, opened before anything else). Node can neither setns
// nor keep a socket of one namespace while making them in another; a process of its own also outlives snap, as the
// copy does.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { RestoreFailedError } from '../errors.js'

const PYTHON = ['/usr/bin/python3', '/bin/python3'].find((p) => existsSync(p))

const FORWARDER = `
import ctypes, os, selectors, signal, socket, sys, threading
host_port, netns_pid, port, holder = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
try:
    holder_fd = os.pidfd_open(holder)
    ns = os.open(f"/proc/{netns_pid}/ns/net", os.O_RDONLY)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", host_port))
    listener.listen(64)
    if libc.setns(ns, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns: " + os.strerror(ctypes.get_errno()))
    os.close(ns)
except OSError as e:
    print("error " + str(e), flush=True); sys.exit(1)
print("listening", flush=True)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
def serve(client):
    try:
        inside = socket.create_connection(("127.0.0.1", port), timeout=10)
        inside.settimeout(None)
    except OSError:
        client.close(); return
    threading.Thread(target=pump, args=(inside, client), daemon=True).start()
    pump(client, inside)
sel = selectors.DefaultSelector()
sel.register(listener, selectors.EVENT_READ)
sel.register(holder_fd, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj == holder_fd:
            os._exit(0)
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client,), daemon=True).start()
`

export interface Forwarder {
  pid: number
  hostPort: number
  port: number
}

/**
 * Starts a forwarder from 127.0.0.1:hostPort on the host to 127.0.0.1:port in the network namespace of netnsPid, for
 * as long as holderPid lives. Resolves once it listens; a port already taken on the host is a refusal naming it.
 */
export async function startForwarder(hostPort: number, netnsPid: number, port: number, holderPid: number, timeoutMs = 10_000): Promise<Forwarder> {
  if (!PYTHON) throw new RestoreFailedError('--publish needs python3, which is not installed', 'install python3, or reach the copy with the nsenter command instead')
  const child = spawn(PYTHON, ['-c', FORWARDER, String(hostPort), String(netnsPid), String(port), String(holderPid)], {
    detached: true,
    stdio: ['ignore', 'pipe', 'ignore'],
  })
  const first = await new Promise<string>((resolve) => {
    let out = ''
    const timer = setTimeout(() => resolve('error it did not start listening in time'), timeoutMs)
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString()
      if (out.includes('\n')) {
        clearTimeout(timer)
        resolve(out.split('\n')[0]!)
      }
    })
    child.once('exit', () => {
      clearTimeout(timer)
      resolve(out.split('\n')[0] || 'error it exited')
    })
  })
  child.stdout!.destroy()
  child.unref()
  if (first !== 'listening' || child.pid === undefined) {
    if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
    throw new RestoreFailedError(
      `cannot publish 127.0.0.1:${hostPort} to the copy's port ${port}: ${first.replace(/^error /, '')}`,
      'choose another host port with --publish HOSTPORT:PORT',
    )
  }
  return { pid: child.pid, hostPort, port }
}
