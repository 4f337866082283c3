-- Runs once, when the PostgreSQL container starts on an empty volume.
CREATE TABLE public.orders (
    id         bigint PRIMARY KEY,
    status     text NOT NULL,
    amount     numeric(12, 2) NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO public.orders (id, status, amount)
VALUES (1, 'new', 19.90), (2, 'paid', 5.00), (3, 'shipped', 120.00);
