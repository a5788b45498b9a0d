// Mutation testing of the statecharts in machines/ against their tests in test/machines.
//   npm run test:mutation                                   every machine, every machine test
//   MACHINE_TESTS=test/machines/connection.test.ts npx stryker run --mutate machines/connection.ts
//                                                           one machine against its own tests (minutes)
// (MACHINE_TESTS narrows vitest.machines.config.ts; do not use --testFiles, see there.)
// Reports: reports/mutation/mutation.html and .json.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.machines.config.ts', related: true },
  mutate: ['machines/**/*.ts'],
  coverageAnalysis: 'perTest',
  concurrency: 2,
  // The machine tests run on simulated clocks: a mutant that takes long is stuck, not slow.
  timeoutMS: 10_000,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
  ignorePatterns: ['data', 'coverage', '.tmp', '*.log'],
  // Stryker rewrites tsconfig `extends`/`references` in its sandbox through the `typescript` JS API,
  // which TypeScript 7 (the native compiler) no longer has. tsconfig.json has neither, so point the
  // rewriter at a file that does not exist and it leaves the copy alone.
  tsconfigFile: 'tsconfig.stryker-no-rewrite.json',
}
