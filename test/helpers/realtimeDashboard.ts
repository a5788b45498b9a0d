import { createClient, type RealtimeChannel, type SupabaseClient } from '@supabase/supabase-js'
import WebSocket from 'ws'
import type { ReceivedEvent } from './dashboard.js'
import { waitFor } from './wait.js'

/** A dashboard on Supabase Realtime, as a page would use it: real supabase-js with the anon key. */
export class RealtimeDashboard {
  readonly events: ReceivedEvent[] = []
  readonly messages: Array<{ first_seq: number; last_seq: number; count: number }> = []
  readonly controls: Array<Record<string, unknown>> = []
  readonly statuses: string[] = []
  private client: SupabaseClient
  private channel?: RealtimeChannel

  constructor(url: string, anonKey: string, private readonly channelName = 'monitoring') {
    this.client = createClient(url, anonKey, { realtime: { transport: WebSocket as never, heartbeatIntervalMs: 5000 } })
  }

  async subscribe(): Promise<void> {
    this.channel = this.client
      .channel(this.channelName, { config: { broadcast: { self: false } } })
      .on('broadcast', { event: 'monitoring_events' }, ({ payload }) => {
        const batch = payload as { first_seq: number; last_seq: number; events: ReceivedEvent[] }
        this.messages.push({ first_seq: batch.first_seq, last_seq: batch.last_seq, count: batch.events.length })
        this.events.push(...batch.events)
      })
      .on('broadcast', { event: 'control' }, ({ payload }) => this.controls.push(payload as Record<string, unknown>))
      .subscribe((status) => this.statuses.push(status))
    await waitFor(() => this.statuses.includes('SUBSCRIBED'), 'the Realtime dashboard to subscribe', 15_000)
  }

  async waitForCount(n: number, timeoutMs = 60_000): Promise<void> {
    await waitFor(() => this.events.length >= n, `${n} Realtime events (have ${this.events.length})`, timeoutMs)
  }

  async close(): Promise<void> {
    await this.client.removeAllChannels()
  }
}
