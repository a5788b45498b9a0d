import { defineConfig } from 'vitest/config'

// The machine tests alone: pure statecharts on simulated clocks, no services. Stryker runs these
// (stryker.config.mjs); `npm test` keeps using vitest.config.ts. MACHINE_TESTS (comma-separated
// globs) narrows them, e.g. to one machine's own tests for its mutation score. (Stryker's own
// --testFiles activates static mutants too late with the vitest runner, stryker-js#6144.)
export default defineConfig({
  test: {
    include: process.env.MACHINE_TESTS ? process.env.MACHINE_TESTS.split(',') : ['test/machines/**/*.test.ts'],
    testTimeout: 60_000,
    reporters: ['default'],
  },
})
