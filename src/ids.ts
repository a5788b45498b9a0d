/** The systemIds of the relay's machines: how machines find each other, and how src/ feeds them. */
export const ids = {
  supervisor: 'supervisor',
  storeDependency: 'storeDependency',
  storeConnection: 'storeConnection',
  storeBreaker: 'storeBreaker',
  storeReplayer: 'storeDlqReplayer',
  storeFlusher: 'storeFlusher',
  realtimeDependency: 'realtimeDependency',
  realtimeConnection: 'realtimeConnection',
  realtimeBreaker: 'realtimeBreaker',
  realtimeFlusher: 'realtimeFlusher',
  rollout: 'rolloutController',
} as const
