-- The site's shipments by creation (the shipper excursion lookup reads its own store).
CREATE INDEX IF NOT EXISTS events_shipments_created ON events (position)
    WHERE event_type = 'cellbank.delivery.v1.ShipmentCreated';
