import WebSocket from 'ws'
import { waitFor } from './wait.js'

export interface ReceivedEvent {
  id: string
  seq: number
  event_type: string
  data: Record<string, unknown>
  [k: string]: unknown
}

/** A dashboard client over a real WebSocket that records every event frame it receives. */
export class DashboardClient {
  readonly events: ReceivedEvent[] = []
  readonly frames: Array<Record<string, unknown>> = []
  closeCode: number | undefined
  readonly ws: WebSocket
  readonly opened: Promise<void>
  readonly closed: Promise<number>

  constructor(baseUrl: string, since?: number, client?: string) {
    const params = new URLSearchParams()
    if (since !== undefined) params.set('since', String(since))
    if (client !== undefined) params.set('client', client)
    const query = params.size ? `?${params}` : ''
    const url = `${baseUrl.replace(/^http/, 'ws')}/ws${query}`
    this.ws = new WebSocket(url)
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve())
      this.ws.once('error', reject)
    })
    this.closed = new Promise((resolve) => this.ws.once('close', (code) => resolve((this.closeCode = code))))
    this.ws.on('error', () => {})
    this.ws.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { type: string; event?: ReceivedEvent; events?: ReceivedEvent[] }
      if (frame.type === 'event') this.events.push(frame.event!)
      else if (frame.type === 'events') for (const e of frame.events!) this.events.push(e)
      else this.frames.push(frame)
    })
  }

  async waitForCount(n: number, timeoutMs = 30_000): Promise<void> {
    await waitFor(() => this.events.length >= n, `${n} events (have ${this.events.length})`, timeoutMs)
  }

  close(): void {
    this.ws.close()
  }
}

/** Asserts-friendly summary: seqs strictly increasing by one, no duplicates. */
export function seqProblems(events: ReceivedEvent[]): string[] {
  const problems: string[] = []
  for (let i = 1; i < events.length; i++) {
    if (events[i]!.seq !== events[i - 1]!.seq + 1) problems.push(`seq ${events[i - 1]!.seq} → ${events[i]!.seq} at ${i}`)
    if (problems.length > 10) break
  }
  return problems
}
