/** Waits for `work` at most `ms`; resolves 'bounded' on timeout or failure (for best-effort closes). */
export async function bounded<T>(work: Promise<T>, ms: number): Promise<T | 'bounded'> {
  let timer: NodeJS.Timeout | undefined
  const limit = new Promise<'bounded'>((resolve) => {
    timer = setTimeout(() => resolve('bounded'), ms)
    timer.unref()
  })
  try {
    return await Promise.race([work.catch(() => 'bounded' as const), limit])
  } finally {
    clearTimeout(timer)
  }
}
