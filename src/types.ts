/** A monitoring event as producers send it, after validation and defaults. */
export interface MonitoringEvent {
  id: string
  event_type: string
  timestamp: string
  source: string
  data: Record<string, unknown>
  metadata: Record<string, unknown>
}

/** An accepted event: the relay has given it a seq and made it durable. */
export interface StoredEvent extends MonitoringEvent {
  seq: number
}
