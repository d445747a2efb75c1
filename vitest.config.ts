import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // Integration tests start real servers and child processes; two cores do not gain from more forks.
    maxWorkers: 2,
    pool: 'forks',
  },
})
