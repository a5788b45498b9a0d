/// <reference lib="dom" />
import { existsSync } from 'node:fs'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRealtimePeer, type RealtimePeer } from '../fixtures/realtimePeer.js'
import { startInProcessRelay, type InProcessRelay } from '../helpers/inProcessRelay.js'
import { freshDatabase, pgAvailable } from '../helpers/pg.js'
import { makeEvents, postEvents } from '../helpers/relayProcess.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const haveChromium = existsSync(CHROMIUM)
if (!haveChromium && process.env.CI !== 'true') console.warn(`[dashboard.browser] ${CHROMIUM} not found: browser tests skipped (apt-get install chromium)`)
const run = haveChromium || process.env.CI === 'true'

async function seqsOnPage(page: Page): Promise<number[]> {
  return page.$$eval('#events tr', (rows) => rows.map((r) => Number((r as HTMLElement).dataset.seq)))
}

describe.runIf(run)('dashboard page in real Chromium', () => {
  let browser: Browser
  beforeAll(async () => {
    if (!haveChromium) throw new Error(`Chromium is required under CI=true (${CHROMIUM})`)
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    })
  })
  afterAll(async () => {
    await browser?.close()
  })

  it('shows live events over /ws and resumes after a reload without gaps or repeats', async () => {
    const r = await startInProcessRelay()
    const page = await browser.newPage()
    const errors: string[] = []
    page.on('pageerror', (e) => errors.push(e.message))
    try {
      await page.goto(r.url)
      await page.waitForFunction(() => document.getElementById('status')?.textContent === 'live')
      expect(await page.textContent('#transport')).toBe('websocket')
      expect((await postEvents(r.url, makeEvents(30, 'page'))).status).toBe(202)
      await page.waitForFunction(() => document.getElementById('count')?.textContent === '30')
      const before = await seqsOnPage(page)
      expect(before).toHaveLength(30)
      // Events published while the page is gone arrive after the reload, via ?since=.
      await page.goto('about:blank')
      expect((await postEvents(r.url, makeEvents(5, 'away'))).status).toBe(202)
      await page.goto(r.url)
      await page.waitForFunction(() => document.querySelectorAll('#events tr').length === 5)
      const after = await seqsOnPage(page)
      expect(after.sort((a, b) => a - b)).toEqual([31, 32, 33, 34, 35].map((n) => n + Math.min(...before) - 1))
      expect(errors).toEqual([])
    } finally {
      await page.close()
      await r.stop()
    }
  }, 60_000)

  describe.runIf(pgAvailable)('with Supabase Realtime', () => {
    let peer: RealtimePeer
    let db: { url: string; drop(): Promise<void> }
    let r: InProcessRelay
    beforeAll(async () => {
      peer = await startRealtimePeer()
      db = await freshDatabase('page')
      r = await startInProcessRelay({
        DATABASE_URL: db.url,
        ADMIN_TOKEN: 'page-admin',
        MONITORING_USE_ADAPTER: 'true',
        MONITORING_ADAPTER_TYPE: 'realtime',
        SUPABASE_URL: peer.url,
        SUPABASE_SERVICE_ROLE_KEY: peer.keys.serviceRole,
        SUPABASE_ANON_KEY: peer.keys.anon,
        BREAKER_OPEN_MS: '60000',
        BREAKER_MIN_CALLS: '3',
        REALTIME_ACK_TIMEOUT_MS: '1000',
      })
    })
    afterAll(async () => {
      await r?.stop()
      await peer?.close()
      await db?.drop()
    })

    it('subscribes through supabase-js with the anon key (never the service-role key), then fails over to /ws on the control broadcast without missing an event', async () => {
      const page = await browser.newPage()
      const requests: string[] = []
      page.on('request', (req) => requests.push(req.url()))
      try {
        await page.goto(r.url)
        await page.waitForFunction(() => document.getElementById('transport')?.textContent === 'realtime' && document.getElementById('status')?.textContent === 'live')
        const socket = peer.sockets().find((s) => s.apikey === peer.keys.anon)
        expect(socket).toBeDefined()
        const html = await page.content()
        expect(html).not.toContain(peer.keys.serviceRole)
        expect(requests.join(' ')).not.toContain(peer.keys.serviceRole)
        expect((await postEvents(r.url, makeEvents(20, 'rt-page'))).status).toBe(202)
        await page.waitForFunction(() => Number(document.getElementById('count')?.textContent) === 20)

        // Realtime goes away: the page sees its channel fail and resumes on /ws?since=.
        peer.refuseJoins('realtime unavailable')
        peer.dropSockets()
        expect((await postEvents(r.url, makeEvents(10, 'during'))).status).toBe(202)
        await page.waitForFunction(() => document.getElementById('transport')?.textContent === 'websocket', undefined, { timeout: 45_000 })
        expect((await postEvents(r.url, makeEvents(10, 'after'))).status).toBe(202)
        await page.waitForFunction(() => Number(document.getElementById('count')?.textContent) === 40, undefined, { timeout: 20_000 })
        const seqs = (await seqsOnPage(page)).sort((a, b) => a - b)
        expect(new Set(seqs).size).toBe(40)
        expect(seqs[39]! - seqs[0]!).toBe(39)
      } finally {
        peer.clearFaults()
        await page.close()
      }
    }, 90_000)
  })
})
