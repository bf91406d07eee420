-- Which shipment carries which of this site's orders (from the delivery events).
CREATE TABLE IF NOT EXISTS shipment_orders (
    shipment_id text PRIMARY KEY,
    order_id    text NOT NULL
);
