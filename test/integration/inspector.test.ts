import { once } from 'node:events'
import { WebSocketServer } from 'ws'
import { describe, expect, it } from 'vitest'
import { startRelayProcess } from '../helpers/relayProcess.js'
import { waitFor } from '../helpers/wait.js'

describe('INSPECT_URL', () => {
  it('streams every machine of the actor system to a Stately inspector over WebSocket', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    await once(wss, 'listening')
    const messages: Array<{ type: string; sessionId?: string; actorRef?: unknown; snapshot?: unknown; name?: string; definition?: unknown }> = []
    wss.on('connection', (ws) => ws.on('message', (data) => messages.push(JSON.parse(String(data)))))
    const port = (wss.address() as { port: number }).port
    const relay = await startRelayProcess({ INSPECT_URL: `ws://127.0.0.1:${port}` })
    try {
      await waitFor(() => messages.some((m) => m.type === '@xstate.snapshot'), 'snapshots at the inspector', 20_000)
      const actors = messages.filter((m) => m.type === '@xstate.actor')
      const text = JSON.stringify(actors)
      for (const id of ['supervisor', 'batchFlusher', 'circuitBreaker', 'connection', 'dlqReplayer']) expect(text).toContain(id)
      relay.kill('SIGTERM')
      expect((await relay.exited).code).toBe(0)
    } finally {
      relay.kill('SIGKILL')
      wss.close()
    }
  }, 60_000)
})
