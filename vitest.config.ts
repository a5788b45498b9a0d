import { defineConfig } from 'vitest/config'

// Tests that start relays, servers and browsers share two cores: run files one at a
// time in a single forked worker so they never starve each other of CPU.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
})
