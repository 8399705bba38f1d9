CREATE TABLE `batch_chunks` (
	`batch_id` text NOT NULL,
	`chunk_no` integer NOT NULL,
	`state` text NOT NULL,
	`attempt` integer DEFAULT 0 NOT NULL,
	`sent_at` integer NOT NULL,
	PRIMARY KEY(`batch_id`, `chunk_no`)
);
--> statement-breakpoint
CREATE INDEX `batch_chunks_state` ON `batch_chunks` (`batch_id`,`state`);--> statement-breakpoint
CREATE TABLE `batch_requests` (
	`batch_id` text NOT NULL,
	`idx` integer NOT NULL,
	`custom_id` text NOT NULL,
	`line` integer NOT NULL,
	`offset` integer NOT NULL,
	`length` integer NOT NULL,
	`state` text DEFAULT 'pending' NOT NULL,
	`chunk_no` integer,
	`result` text,
	`is_error` integer,
	PRIMARY KEY(`batch_id`, `idx`)
);
--> statement-breakpoint
CREATE INDEX `batch_requests_state` ON `batch_requests` (`batch_id`,`state`,`idx`);--> statement-breakpoint
CREATE TABLE `batches` (
	`id` text PRIMARY KEY NOT NULL,
	`endpoint` text NOT NULL,
	`model` text,
	`input_file_id` text NOT NULL,
	`completion_window` text NOT NULL,
	`status` text NOT NULL,
	`output_file_id` text,
	`error_file_id` text,
	`created_at` integer NOT NULL,
	`in_progress_at` integer,
	`expires_at` integer NOT NULL,
	`finalizing_at` integer,
	`completed_at` integer,
	`failed_at` integer,
	`expired_at` integer,
	`cancelling_at` integer,
	`cancelled_at` integer,
	`total` integer DEFAULT 0 NOT NULL,
	`completed` integer DEFAULT 0 NOT NULL,
	`failed` integer DEFAULT 0 NOT NULL,
	`input_tokens` integer DEFAULT 0 NOT NULL,
	`cached_tokens` integer DEFAULT 0 NOT NULL,
	`output_tokens` integer DEFAULT 0 NOT NULL,
	`reasoning_tokens` integer DEFAULT 0 NOT NULL,
	`errors` text,
	`metadata` text,
	`output_expires_after` integer,
	`idempotency_key` text,
	`fingerprint` text,
	`ending` text
);
--> statement-breakpoint
CREATE INDEX `batches_created` ON `batches` (`created_at`);--> statement-breakpoint
CREATE INDEX `batches_status` ON `batches` (`status`);--> statement-breakpoint
CREATE INDEX `batches_idem` ON `batches` (`idempotency_key`);--> statement-breakpoint
CREATE TABLE `files` (
	`id` text PRIMARY KEY NOT NULL,
	`bytes` integer NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer,
	`filename` text NOT NULL,
	`purpose` text NOT NULL,
	`deleted_at` integer
);
--> statement-breakpoint
CREATE INDEX `files_purpose_created` ON `files` (`purpose`,`created_at`);--> statement-breakpoint
CREATE INDEX `files_created` ON `files` (`created_at`);