-- The workload for shop.sql (WORKLOAD=shop-workload.sql, a pgbench script):
-- each transaction places one order, so the committed-equals-arrived check
-- counts orders (ARRIVED_SQL="SELECT count(*) FROM orders").
\set customer random(1, 1000)
\set product random(1, 100)
\set older random(1, 20000)
BEGIN;
INSERT INTO orders (customer_id) VALUES (:customer);
INSERT INTO order_lines (order_id, product_id, quantity) VALUES (currval('orders_id_seq'), :product, 1);
UPDATE products SET stock = stock - 1 WHERE id = :product;
UPDATE orders SET status = 'paid' WHERE id = :older AND status = 'new';
INSERT INTO audit_log (happened_at, what, detail) VALUES (now(), 'order', jsonb_build_object('customer', :customer));
END;
