import { randomBytes } from 'node:crypto'
import { connect, type Socket } from 'node:net'

/** What a stalled dashboard found once it read what the relay had sent it. */
export interface StalledOutcome {
  /** Status code of the close frame the relay sent, if one arrived before the socket went. */
  closeCode: number | undefined
  closeReason: string | undefined
  /** Event frames (text frames) read before the close frame. */
  textFrames: number
  /** The TCP connection ended (the relay hung up, with or without a close frame). */
  socketClosed: boolean
}

/**
 * A dashboard on /ws that completes the WebSocket handshake over a raw TCP socket and then does
 * not read a byte: the kernel's receive buffer fills, then the relay's send queue grows. What the
 * relay sends is kept unread until `readAll()` resumes reading and parses the frames.
 */
export class StalledDashboard {
  private buffered = Buffer.alloc(0)
  private outcome: StalledOutcome = { closeCode: undefined, closeReason: undefined, textFrames: 0, socketClosed: false }
  private settled?: (o: StalledOutcome) => void
  private readonly done: Promise<StalledOutcome>
  private handshakeDone = false

  private constructor(readonly socket: Socket) {
    this.done = new Promise((resolve) => (this.settled = resolve))
    socket.on('error', () => {})
    socket.on('close', () => {
      this.outcome.socketClosed = true
      this.settled?.(this.outcome)
    })
  }

  /** Connects and upgrades `/ws${query}`; resolves once the 101 answer arrived, then stops reading. */
  static async open(port: number, query = ''): Promise<StalledDashboard> {
    const socket = connect(port, '127.0.0.1')
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    const client = new StalledDashboard(socket)
    socket.write(
      `GET /ws${query} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    )
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        client.buffered = Buffer.concat([client.buffered, chunk])
        const end = client.buffered.indexOf('\r\n\r\n')
        if (end < 0) return
        socket.off('data', onData)
        socket.pause()
        const head = client.buffered.subarray(0, end).toString('latin1')
        client.buffered = client.buffered.subarray(end + 4)
        client.handshakeDone = true
        if (!/^HTTP\/1\.1 101 /.test(head)) reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`))
        else resolve()
      }
      socket.on('data', onData)
      socket.once('close', () => reject(new Error('closed during the handshake')))
    })
    return client
  }

  /**
   * Starts reading again and parses every frame until a close frame or the end of the connection;
   * resolves with what was found (bounded by `timeoutMs`).
   */
  readAll(timeoutMs = 10_000): Promise<StalledOutcome> {
    if (!this.handshakeDone) throw new Error('readAll() before the handshake')
    const timer = setTimeout(() => this.settled?.(this.outcome), timeoutMs)
    timer.unref()
    this.socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk])
      this.parse()
    })
    this.parse()
    this.socket.resume()
    return this.done.finally(() => clearTimeout(timer))
  }

  destroy(): void {
    this.socket.destroy()
  }

  /** Server frames are unmasked (RFC 6455 §5.1): FIN/opcode, length (7, 16 or 64 bits), payload. */
  private parse(): void {
    for (;;) {
      const b = this.buffered
      if (b.length < 2) return
      const opcode = b[0]! & 0x0f
      let length = b[1]! & 0x7f
      let offset = 2
      if (length === 126) {
        if (b.length < 4) return
        length = b.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (b.length < 10) return
        length = Number(b.readBigUInt64BE(2))
        offset = 10
      }
      if (b.length < offset + length) return
      const payload = b.subarray(offset, offset + length)
      this.buffered = b.subarray(offset + length)
      if (opcode === 0x1) this.outcome.textFrames++
      if (opcode === 0x8) {
        this.outcome.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : undefined
        this.outcome.closeReason = payload.length > 2 ? payload.subarray(2).toString('utf8') : undefined
        this.settled?.(this.outcome)
        return
      }
    }
  }
}
