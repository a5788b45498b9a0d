import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from './wait.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

export interface RelayProcess {
  child: ChildProcess
  port: number
  url: string
  dataDir: string
  /** Every JSON log line so far. */
  logs: Array<Record<string, unknown>>
  stderr: () => string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  kill(signal?: NodeJS.Signals): void
}

/**
 * Starts the real daemon (`tsx src/main.ts`) as a child process on a free port and waits until
 * /readyz answers 200. The data dir is a fresh temp dir unless given (restarts reuse it).
 */
export async function startRelayProcess(env: Record<string, string> = {}, opts: { dataDir?: string; waitReady?: boolean } = {}): Promise<RelayProcess> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'relay-data-')))
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts')], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', PORT: '0', HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'info', HEALTH_INTERVAL_MS: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const logs: Array<Record<string, unknown>> = []
  let stderr = ''
  let partial = ''
  child.stdout!.setEncoding('utf8')
  child.stdout!.on('data', (chunk: string) => {
    partial += chunk
    const lines = partial.split('\n')
    partial = lines.pop()!
    for (const line of lines) {
      if (!line.trim()) continue
      try {
        logs.push(JSON.parse(line))
      } catch {
        logs.push({ raw: line })
      }
    }
  })
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (c: string) => (stderr += c))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  // Start-up fails fast when the process exits instead of listening.
  const exitedEarly = exited.then(() => {
    throw new Error(`relay exited during start-up: ${stderr}${JSON.stringify(logs.slice(-5))}`)
  })
  exitedEarly.catch(() => {})
  let port = 0
  let url = ''
  try {
    const listening = await Promise.race([waitFor(() => logs.find((l) => l.msg === 'listening'), 'the relay to listen', 30_000), exitedEarly])
    port = Number(listening.port)
    url = `http://127.0.0.1:${port}`
    if (opts.waitReady !== false) {
      await Promise.race([waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, 'the relay to be ready', 60_000, 50), exitedEarly])
    }
  } catch (err) {
    child.kill('SIGKILL')
    throw err
  }
  return { child, port, url, dataDir, logs, stderr: () => stderr, exited, kill: (s = 'SIGTERM') => void child.kill(s) }
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
}

/** POSTs events (JSON array) and returns status and parsed body. */
export async function postEvents(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(`${url}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  const text = await res.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {}
  return { status: res.status, body: parsed, headers: res.headers }
}

export function makeEvents(n: number, prefix = 'e'): Array<Record<string, unknown>> {
  return Array.from({ length: n }, (_, i) => ({ event_type: 'test.event', source: 'test', data: { i, tag: `${prefix}-${i}` } }))
}
