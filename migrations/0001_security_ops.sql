CREATE TABLE `api_keys` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`project` text NOT NULL,
	`hash` text NOT NULL,
	`prefix` text NOT NULL,
	`admin` integer DEFAULT false NOT NULL,
	`created_at` integer NOT NULL,
	`last_used_at` integer,
	`revoked_at` integer
);
--> statement-breakpoint
CREATE INDEX `api_keys_hash` ON `api_keys` (`hash`);--> statement-breakpoint
CREATE TABLE `benchmark_runs` (
	`id` text PRIMARY KEY NOT NULL,
	`model` text NOT NULL,
	`created_at` integer NOT NULL,
	`kind` text NOT NULL,
	`requests_per_s` integer,
	`tokens_per_s` integer,
	`latency_p50_ms` integer,
	`latency_p95_ms` integer,
	`details` text
);
--> statement-breakpoint
CREATE INDEX `benchmark_runs_model` ON `benchmark_runs` (`model`,`created_at`);--> statement-breakpoint
CREATE TABLE `result_stars` (
	`batch_id` text NOT NULL,
	`custom_id` text NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`batch_id`, `custom_id`)
);
--> statement-breakpoint
CREATE TABLE `webhook_deliveries` (
	`id` text PRIMARY KEY NOT NULL,
	`batch_id` text NOT NULL,
	`event_type` text NOT NULL,
	`url` text NOT NULL,
	`payload` text NOT NULL,
	`created_at` integer NOT NULL,
	`state` text DEFAULT 'pending' NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`next_attempt_at` integer NOT NULL,
	`last_error` text,
	`delivered_at` integer
);
--> statement-breakpoint
CREATE INDEX `webhook_deliveries_due` ON `webhook_deliveries` (`state`,`next_attempt_at`);--> statement-breakpoint
CREATE INDEX `webhook_deliveries_batch` ON `webhook_deliveries` (`batch_id`);--> statement-breakpoint
ALTER TABLE `batches` ADD `owner` text;--> statement-breakpoint
ALTER TABLE `files` ADD `owner` text;--> statement-breakpoint
ALTER TABLE `files` ADD `idempotency_key` text;--> statement-breakpoint
CREATE INDEX `files_idem` ON `files` (`owner`,`idempotency_key`);