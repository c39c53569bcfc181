-- A seed for the rehearsal (SEED=shop.sql): a small shop with what a real
-- schema has and pgbench's does not: an enum, a sequence of its own, foreign
-- keys, a table without a primary key (REPLICA IDENTITY FULL, so that its
-- updates and deletes replicate).
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE SEQUENCE order_number_seq START 100000;

CREATE TABLE customers (
    id int PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE products (
    id int PRIMARY KEY,
    title text NOT NULL,
    price numeric(10, 2) NOT NULL,
    stock int NOT NULL
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    number bigint NOT NULL UNIQUE DEFAULT nextval('order_number_seq'),
    customer_id int NOT NULL REFERENCES customers (id),
    status order_status NOT NULL DEFAULT 'new',
    placed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE order_lines (
    order_id bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id int NOT NULL REFERENCES products (id),
    quantity int NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);
-- No primary key: an append-mostly log, as many schemas have one.
CREATE TABLE audit_log (
    happened_at timestamptz NOT NULL,
    what text NOT NULL,
    detail jsonb
);
ALTER TABLE audit_log REPLICA IDENTITY FULL;

INSERT INTO customers (id, name)
    SELECT i, 'customer ' || i FROM generate_series(1, 1000) i;
INSERT INTO products (id, title, price, stock)
    SELECT i, 'product ' || i, (i % 50) + 0.99, 1000000 FROM generate_series(1, 100) i;
INSERT INTO orders (customer_id, status)
    SELECT 1 + i % 1000, (ARRAY['new', 'paid', 'shipped', 'cancelled']::order_status[])[1 + i % 4]
    FROM generate_series(1, 20000) i;
INSERT INTO order_lines (order_id, product_id, quantity)
    SELECT id, 1 + id % 100, 1 + id % 3 FROM orders;
INSERT INTO audit_log (happened_at, what, detail)
    SELECT now(), 'seed', jsonb_build_object('order', id) FROM orders WHERE id % 10 = 0;

-- Scanned receipts as large objects, which logical replication does not carry.
CREATE TABLE receipts (order_id bigint PRIMARY KEY REFERENCES orders, scan oid NOT NULL);
INSERT INTO receipts (order_id, scan)
    SELECT id, lo_from_bytea(0, convert_to(repeat('receipt of order ' || id || E'\n', 500), 'UTF8'))
    FROM orders WHERE id <= 20;
ANALYZE;
